//! What runs on each instance: a static script (the parts in `instance/script/`, assembled in
//! the order of their names into one text at build time and embedded in the binary) behind a
//! generated header of shell assignments.
//!
//! The header is the only generated shell, and every value in it goes through [`quote`], so no
//! input can become code. Secret *values* are never in it: the script fetches them on the
//! instance from the secret named by `SECRET_ID`. The result is plain text; sending it is the
//! fleet adapter's job.

use std::fmt::Write as _;

use crate::model::{ContainerSpec, EnvVar, ImageRef, ImageTag, ParameterName, PortMapping, RegistryHost, Running};

/// The script body: its parts, one job each, in order (a unit test checks that this list is
/// every file of `script/` in the order of its name). Shellcheck-clean, each part and the whole
/// (scripts/lint).
pub const SCRIPT: &str = concat!(
    include_str!("script/00-common.sh"),
    include_str!("script/01-containers.sh"),
    include_str!("script/02-environment.sh"),
    include_str!("script/03-check.sh"),
    include_str!("script/03-logs.sh"),
    include_str!("script/04-lock.sh"),
    include_str!("script/05-proxy.sh"),
    include_str!("script/06-guard.sh"),
    include_str!("script/07-health.sh"),
    include_str!("script/08-swap.sh"),
    include_str!("script/09-maintenance.sh"),
    include_str!("script/09-rollback.sh"),
    include_str!("script/10-pull.sh"),
    include_str!("script/11-predeploy.sh"),
    include_str!("script/12-deploy.sh"),
);

/// The script's first line: where the header ends (the fake world reads the header up to it).
pub const SCRIPT_MARK: &str = "# ---- ec2-deploy on-instance script";

/// The script as instances get it: [`SCRIPT`] without its comment lines (a third of its bytes),
/// so that a command (this, a header of at most the record's 8 KB, and SSM's wrapping) stays well
/// inside SSM's 64 KB for a document and its parameters. `# shellcheck` directives stay, for the
/// user-data script that is linted, and the first line, which marks where the header ends. No line of the script starts with `#` inside a string (the
/// parts have no here-documents), so only comments go.
pub fn script() -> &'static str {
    static STRIPPED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        SCRIPT
            .lines()
            .filter(|line| {
                let t = line.trim_start();
                !t.starts_with('#') || t.starts_with("# shellcheck") || t.starts_with(SCRIPT_MARK)
            })
            .flat_map(|line| [line, "\n"])
            .collect()
    });
    &STRIPPED
}

/// Exit codes of the script, and the step each one means.
pub fn step_for_exit_code(code: i32) -> &'static str {
    match code {
        0 => "done",
        2 => "parameters",
        10 => "prerequisites",
        11 => "registry login",
        12 => "pull",
        13 => "secret",
        14 => "start",
        15 => "health check",
        16 => "health check, previous NOT restored",
        17 => "lock",
        18 => "rollback (previous release not on the instance)",
        19 => "rollback (previous release unhealthy, newer one kept)",
        20 => "docker (the daemon does not answer)",
        21 => "pre-deploy",
        22 => "no (running) container of this name",
        _ => "script",
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name} cannot be passed to the instance: {reason}")]
pub struct QuoteError {
    pub name: &'static str,
    pub reason: &'static str,
}

/// Quotes `value` as one word for bash and POSIX sh. The one quoting function: every value that
/// reaches generated shell goes through here.
pub fn quote(name: &'static str, value: &str) -> Result<String, QuoteError> {
    shlex::try_quote(value).map(|q| q.into_owned()).map_err(|_| QuoteError { name, reason: "it contains a NUL byte" })
}

/// Deploy a release, or go back to what ran before, kept as `<name>-previous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Instances always pull by digest.
    Deploy {
        image: &'a ImageRef,
    },
    Rollback {
        to: &'a Running,
    },
    /// The new release's one-off command (`pre-deploy`), before any instance is switched.
    PreDeploy {
        image: &'a ImageRef,
        command: &'a [String],
        timeout: u32,
    },
}

/// What one deploy asks of each instance.
#[derive(Debug, Clone)]
pub struct ScriptParams<'a> {
    pub mode: Mode<'a>,
    pub registry: &'a RegistryHost,
    pub release: &'a ImageTag,
    pub container: &'a ContainerSpec,
    /// The per-instance proxy's image, when the container's first port goes through it.
    pub proxy: Option<&'a ImageRef>,
}

/// The full script: shebang, generated header, static body.
pub fn render(p: &ScriptParams) -> Result<String, QuoteError> {
    Ok(format!("{}{}", header(p)?, script()))
}

/// `header` with the version of the release record this release will be (or is, for a
/// converge): a boot that read an older record keeps the newer release a deploy left (`RELEASE_VERSION`).
pub fn versioned(header: String, version: i64) -> Result<String, QuoteError> {
    Ok(format!("{header}RELEASE_VERSION={}\n", quote("RELEASE_VERSION", &version.to_string())?))
}

/// The generated header alone (what the snapshot tests lock).
pub fn header(p: &ScriptParams) -> Result<String, QuoteError> {
    let c = p.container;
    let mut h =
        String::from("#!/bin/bash\n# Generated by ec2-deploy: every value below is quoted; the script follows.\n");
    let mut assign = |name: &'static str, value: &str| -> Result<(), QuoteError> {
        writeln!(h, "{name}={}", quote(name, value)?).expect("writing to a String");
        Ok(())
    };
    match p.mode {
        Mode::Deploy { image } => {
            assign("MODE", "deploy")?;
            assign("IMAGE", &image.to_string())?;
        }
        Mode::Rollback { to } => {
            assign("MODE", "rollback")?;
            assign("IMAGE", &to.image)?;
            // What to go back to is the container with these settings, not merely this image.
            assign("ROLLBACK_CONFIG", &to.config)?;
        }
        Mode::PreDeploy { image, timeout, .. } => {
            assign("MODE", "predeploy")?;
            assign("IMAGE", &image.to_string())?;
            assign("PRE_DEPLOY_TIMEOUT", &timeout.to_string())?;
        }
    }
    assign("REGISTRY", p.registry.as_str())?;
    assign("RELEASE", p.release.as_str())?;
    assign("CONTAINER_NAME", c.name.as_str())?;
    assign("SECRET_ID", c.secret_id.as_ref().map(|s| s.as_str()).unwrap_or(""))?;
    assign("HEALTH_PATH", c.health_check_path.as_ref().map(|p| p.as_str()).unwrap_or(""))?;
    assign("HEALTH_PORT", &c.health_port().map(|p| p.to_string()).unwrap_or_default())?;
    assign("HEALTH_TIMEOUT", &c.health_check_timeout.to_string())?;
    // With the proxy, it holds the first port; the container publishes the others.
    let proxied = c.proxied_port().filter(|_| p.proxy.is_some());
    assign("PROXY", if proxied.is_some() { "1" } else { "" })?;
    assign("PROXY_IMAGE", &p.proxy.filter(|_| proxied.is_some()).map(ToString::to_string).unwrap_or_default())?;
    assign("PROXY_PORT", &proxied.map(|p| p.host.to_string()).unwrap_or_default())?;
    assign("APP_PORT", &proxied.map(|p| p.container.to_string()).unwrap_or_default())?;
    assign("DRAIN_TIMEOUT", &c.drain_timeout.to_string())?;
    let trusted = c.proxy_trusted.iter().filter(|_| proxied.is_some()).map(ToString::to_string);
    h.push_str(&array("PROXY_TRUSTED", trusted)?);
    let https = c.https.as_ref().filter(|_| proxied.is_some());
    h.push_str(&array("PROXY_HOSTS", https.into_iter().flat_map(|t| t.hosts.iter().map(ToString::to_string)))?);
    let direct = if proxied.is_some() { c.direct_ports() } else { &c.ports[..] };
    h.push_str(&array("PORTS", direct.iter().map(PortMapping::to_string))?);
    h.push_str(&array("ENV_VARS", c.env.iter().map(|EnvVar { name, value }| format!("{name}={value}")))?);
    // docker create's options (each empty when not given).
    let o = &c.options;
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    let mut assign = |name: &'static str, value: &str| -> Result<(), QuoteError> {
        writeln!(h, "{name}={}", quote(name, value)?).expect("writing to a String");
        Ok(())
    };
    assign("MEMORY", &text(o.memory.as_ref().map(|m| m.as_str())))?;
    assign("CPUS", &text(o.cpus.as_ref().map(|c| c.as_str())))?;
    assign("LOG_DRIVER", &text(o.log_driver.as_ref().map(|d| d.as_str())))?;
    assign("RUN_USER", &text(o.user.as_ref().map(|u| u.as_str())))?;
    assign("PROXY_ACME_EMAIL", &text(https.and_then(|t| t.email.as_ref()).map(|e| e.as_str())))?;
    assign("PROXY_ACME_CA", &text(https.map(|t| t.ca.as_str())))?;
    assign("PROXY_ACME_CA_ROOT", &text(https.and_then(|t| t.ca_root.as_ref()).map(|r| r.as_str())))?;
    h.push_str(&array("COMMAND", o.command.iter().cloned())?);
    h.push_str(&array("VOLUMES", o.volumes.iter().map(ToString::to_string))?);
    h.push_str(&array("LOG_OPTS", o.log_options.iter().map(ToString::to_string))?);
    h.push_str(&array("LABELS", o.labels.iter().map(ToString::to_string))?);
    if let Mode::PreDeploy { command, .. } = p.mode {
        h.push_str(&array("PRE_DEPLOY", command.iter().cloned())?);
    }
    Ok(h)
}

/// The read-only check of a recorded release (`MODE=check`, see the script): the header it was
/// deployed with, the mode set after it, then the script body. Its last line says whether the
/// instance runs that release (`ec2-deploy-check state=…`).
pub fn check_script(recorded_header: &str) -> Result<String, QuoteError> {
    Ok(format!("{recorded_header}MODE={}\n{}", quote("MODE", "check")?, script()))
}

/// `MODE=pull` of a release (see the script): its image and the proxy's, pulled and nothing else
/// (before the first batch switches); the deploy that follows finds them there.
pub fn pull_script(header: &str) -> Result<String, QuoteError> {
    Ok(format!("{header}MODE={}\n{}", quote("MODE", "pull")?, script()))
}

/// `MODE=maintenance` of a recorded release (see the script): `on` puts a page (the `message`,
/// 503 with `Retry-After: retry_after`) in front of the app, `off` takes it away; the health path
/// still reaches the app unless `fail_health`.
pub fn maintenance_script(
    recorded_header: &str,
    on: bool,
    message: &str,
    retry_after: u32,
    fail_health: bool,
) -> Result<String, QuoteError> {
    Ok(format!(
        "{recorded_header}MODE={}\nMAINTENANCE={}\nMAINTENANCE_MESSAGE={}\nMAINTENANCE_RETRY_AFTER={}\nMAINTENANCE_HEALTH={}\n{}",
        quote("MODE", "maintenance")?,
        quote("MAINTENANCE", if on { "on" } else { "off" })?,
        quote("MAINTENANCE_MESSAGE", message)?,
        quote("MAINTENANCE_RETRY_AFTER", &retry_after.to_string())?,
        quote("MAINTENANCE_HEALTH", if fail_health { "fail" } else { "pass" })?,
        script()
    ))
}

/// The last `query.lines` lines a recorded release's container printed (`MODE=logs`, see the
/// script), from `query.since`, matching `query.grep`,
/// its secret's values masked; on stderr, `ec2-deploy-logs lines=N bytes=B`.
pub fn logs_script(recorded_header: &str, query: &crate::logs::Query) -> Result<String, QuoteError> {
    Ok(format!(
        "{recorded_header}MODE={}\nLOG_LINES={}\nLOG_SINCE={}\nLOG_GREP={}\n{}",
        quote("MODE", "logs")?,
        quote("LOG_LINES", &query.lines.to_string())?,
        quote("LOG_SINCE", query.since.as_deref().unwrap_or(""))?,
        quote("LOG_GREP", query.grep.as_deref().unwrap_or(""))?,
        script()
    ))
}

/// `command` in a new container of a recorded release (`MODE=exec`, see the script): the
/// release's image, environment (its secret read on the instance), volumes, limits and user,
/// beside the serving container, which it does not touch. Stopped after `timeout` seconds. Its
/// output's lines are `  | `-prefixed; its last stdout line is `ec2-deploy-one-off exit=N`.
pub fn exec_script(recorded_header: &str, command: &[String], timeout: u32) -> Result<String, QuoteError> {
    Ok(format!(
        "{recorded_header}MODE={}\nPRE_DEPLOY_TIMEOUT={}\n{}{}",
        quote("MODE", "exec")?,
        quote("PRE_DEPLOY_TIMEOUT", &timeout.to_string())?,
        array("PRE_DEPLOY", command.iter().cloned())?,
        script()
    ))
}

/// The user-data script for an Auto Scaling launch template: on boot it reads the release record
/// named by `RELEASE_PARAMETER` (default `parameter`), takes the script header recorded there (quoted
/// by [`quote`] when the release was deployed) and runs it with the same script body as a deploy.
pub fn user_data(parameters: &[ParameterName], lifecycle_hook: Option<&str>) -> Result<String, QuoteError> {
    let names: Vec<&str> = parameters.iter().map(ParameterName::as_str).collect();
    Ok(format!(
        r#"#!/bin/bash
# ec2-deploy user-data (generated by `ec2-deploy user-data`): on boot, run the release recorded
# in each SSM parameter of RELEASE_PARAMETER (one per service of this instance, separated by
# spaces), in order, with the same script ec2-deploy runs through SSM.
# The instance needs docker, the AWS CLI, curl and jq or python3, and a role that may read the
# parameters (ssm:GetParameter), pull from ECR and read the releases' secrets.
RELEASE_PARAMETER=${{RELEASE_PARAMETER:-{parameters}}}
# The Auto Scaling launch lifecycle hook this script completes (empty: none).
LIFECYCLE_HOOK=${{LIFECYCLE_HOOK-{hook}}}

set -euo pipefail
# The region, from the instance metadata service (IMDSv2).
imds_token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
AWS_REGION=$(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/placement/region)
export AWS_REGION
script=$(mktemp)
trap 'rm -f "$script"' EXIT
# A deploy that reaches this instance while it boots (its tags match as soon as it runs) sends a
# newer release than the records read here: the script then keeps what that deploy left.
EC2_DEPLOY_BOOT_SINCE=$(date +%s%3N)
export EC2_DEPLOY_BOOT_SINCE
failed=0
read -r -a parameters <<<"$RELEASE_PARAMETER"
for parameter in "${{parameters[@]}}"; do
  if ! record=$(aws ssm get-parameter --region "$AWS_REGION" --name "$parameter" --query Parameter.Value \
    --output text 2>"$script"); then
    # Before the first deploy there is no record: nothing to start, and nothing failed (the
    # first deploy reaches this instance through SSM, by its tags).
    if grep -q ParameterNotFound "$script"; then
      echo "ec2-deploy: no release recorded in $parameter yet: nothing to start; the first deploy will reach this instance"
      continue
    fi
    echo "ec2-deploy: cannot read the release record $parameter: $(cat "$script")" >&2
    failed=1
    continue
  fi
  # The header the release was deployed with (every value quoted by ec2-deploy), then the script.
  if command -v jq >/dev/null 2>&1; then
    printf '%s' "$record" | jq -r .header >"$script"
  else
    printf '%s' "$record" | python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin)["header"])' >"$script"
  fi
  cat >>"$script" <<'EC2_DEPLOY_SCRIPT'
{script}EC2_DEPLOY_SCRIPT
  # One service that does not start does not keep the others from starting.
  bash "$script" || {{ echo "ec2-deploy: the release of $parameter did not start" >&2; failed=1; }}
done
# With a launch lifecycle hook the group keeps the instance out of service (and out of its target
# groups) until this completes it: CONTINUE once every release serves, ABANDON when one does not
# (the group terminates the instance and launches another). A failure before this line leaves
# the hook to its timeout and default result.
if [ -n "$LIFECYCLE_HOOK" ]; then
  instance_id=$(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" http://169.254.169.254/latest/meta-data/instance-id)
  group=$(aws autoscaling describe-auto-scaling-instances --region "$AWS_REGION" --instance-ids "$instance_id" \
    --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text)
  outcome=CONTINUE
  [ "$failed" = 0 ] || outcome=ABANDON
  aws autoscaling complete-lifecycle-action --region "$AWS_REGION" --lifecycle-hook-name "$LIFECYCLE_HOOK" \
    --auto-scaling-group-name "$group" --instance-id "$instance_id" --lifecycle-action-result "$outcome"
  echo "ec2-deploy: lifecycle hook $LIFECYCLE_HOOK of $group completed: $outcome"
fi
exit "$failed"
"#,
        parameters = quote("RELEASE_PARAMETER", &names.join(" "))?,
        hook = quote("LIFECYCLE_HOOK", lifecycle_hook.unwrap_or(""))?,
        script = script(),
    ))
}

/// A bash array, as one quoted scalar per element and the array built from references to them.
/// Quoted literals are never put inside `( )`: bash (5.2 at least) inserts a \x01 before a DEL
/// byte in a double-quoted word of a compound array assignment, which the injection property test
/// found; scalar assignments and expansions of them are not affected.
fn array(name: &'static str, items: impl Iterator<Item = String>) -> Result<String, QuoteError> {
    let mut out = String::new();
    let mut refs = vec![];
    for (i, item) in items.enumerate() {
        writeln!(out, "{name}_{i}={}", quote(name, &item)?).expect("writing to a String");
        refs.push(format!("\"${name}_{i}\""));
    }
    writeln!(out, "{name}=({})", refs.join(" ")).expect("writing to a String");
    Ok(out)
}

/// The items a header's `array` wrote under `name`, read back in order: each `NAME_<i>=` value
/// as the one shell word [`quote`] made of it.
pub fn array_items(header: &str, name: &str) -> Result<Vec<String>, String> {
    let mut items = vec![];
    let prefix = format!("{name}_");
    for line in header.lines() {
        let Some((index, quoted)) = line.strip_prefix(&prefix).and_then(|rest| rest.split_once('=')) else {
            continue;
        };
        if index.parse::<usize>() != Ok(items.len()) {
            return Err(format!("{name}_{index} is out of order"));
        }
        let mut words =
            shlex::split(quoted).filter(|w| w.len() == 1).ok_or(format!("{name}_{index} is not one quoted word"))?;
        items.push(words.remove(0));
    }
    Ok(items)
}

#[cfg(test)]
mod script_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerName, HealthPath, SecretId};

    fn container() -> ContainerSpec {
        ContainerSpec {
            name: ContainerName::parse("shop").unwrap(),
            ports: vec![PortMapping { host: 80, container: 3000 }, PortMapping { host: 9090, container: 9090 }],
            env: vec![
                EnvVar { name: "RUST_LOG".into(), value: "info".into() },
                EnvVar { name: "GREETING".into(), value: "it's $(not) a `command`; rm -rf /".into() },
            ],
            secret_id: Some(SecretId::parse("prod/shop").unwrap()),
            health_check_path: Some(HealthPath::parse("/health").unwrap()),
            health_check_timeout: 45,
            drain_timeout: 30,
            https: None,
            proxy: false,
            proxy_trusted: vec![],
            options: Default::default(),
        }
    }

    fn image() -> ImageRef {
        ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap()
    }

    fn params<'a>(c: &'a ContainerSpec, image: &'a ImageRef, release: &'a ImageTag) -> ScriptParams<'a> {
        ScriptParams { mode: Mode::Deploy { image }, registry: &image.registry, release, container: c, proxy: None }
    }

    fn tag() -> ImageTag {
        ImageTag::parse("v1.2.3").unwrap()
    }

    #[test]
    fn header_snapshot() {
        insta::assert_snapshot!(header(&params(&container(), &image(), &tag())).unwrap());
    }

    #[test]
    fn header_without_optional_values() {
        let c = ContainerSpec {
            name: ContainerName::parse("worker").unwrap(),
            ports: vec![],
            env: vec![],
            secret_id: None,
            health_check_path: None,
            health_check_timeout: 60,
            drain_timeout: 30,
            https: None,
            proxy: false,
            proxy_trusted: vec![],
            options: Default::default(),
        };
        insta::assert_snapshot!(header(&params(&c, &image(), &tag())).unwrap());
    }

    #[test]
    fn header_with_the_proxy() {
        let mut c = container();
        c.proxy = true;
        c.proxy_trusted = ["10.0.0.0/8", "2001:db8::/32"].map(|r| crate::model::IpRange::parse(r).unwrap()).to_vec();
        let proxy = ImageRef::parse(&format!("{}/shop@sha256:{}", image().registry, "f".repeat(64))).unwrap();
        let (image, tag) = (image(), tag());
        let p = ScriptParams { proxy: Some(&proxy), ..params(&c, &image, &tag) };
        let h = header(&p).unwrap();
        assert!(h.contains("\nPROXY=1\n") && h.contains("\nPROXY_PORT=80\nAPP_PORT=3000\n"), "{h}");
        assert!(h.contains("\nPORTS_0=9090:9090\nPORTS=(\"$PORTS_0\")\n"), "only the other port is published: {h}");
        assert!(h.contains("\nPROXY_TRUSTED_1=2001:db8::/32\n"), "{h}");
        insta::assert_snapshot!(h);
    }

    #[test]
    fn nul_bytes_are_refused_not_truncated() {
        let mut c = container();
        c.env[0].value = "a\0b".into();
        assert_eq!(
            render(&params(&c, &image(), &tag())).unwrap_err(),
            QuoteError { name: "ENV_VARS", reason: "it contains a NUL byte" }
        );
    }

    #[test]
    fn the_header_gives_back_every_value_byte_for_byte_when_run_by_bash() {
        let c = container();
        let script = format!(
            "{}printf '%s\\n' \"$IMAGE\" \"$CONTAINER_NAME\" \"$SECRET_ID\" \"$HEALTH_PORT\"; printf '<%s>\\n' \"${{ENV_VARS[@]}}\" \"${{PORTS[@]}}\"",
            header(&params(&c, &image(), &tag())).unwrap()
        );
        let out = std::process::Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let expected = format!(
            "{}\nshop\nprod/shop\n80\n<RUST_LOG=info>\n<GREETING=it's $(not) a `command`; rm -rf />\n<80:3000>\n<9090:9090>\n",
            image()
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn run_options_reach_bash_word_for_word() {
        use crate::model::{parse_command, KeyValue, Memory, RunOptions, User, Volume};
        let mut c = container();
        c.options = RunOptions {
            command: parse_command(r#"sh -c 'echo "$HOME" $(id)' --flag"#).unwrap(),
            volumes: vec![Volume::parse("/srv/data:/data:ro").unwrap()],
            memory: Some(Memory::parse("512m").unwrap()),
            labels: vec![KeyValue::parse_label("note=it's; $(x)").unwrap()],
            user: Some(User::parse("1000:1000").unwrap()),
            ..RunOptions::default()
        };
        let script = format!(
            "{}printf '<%s>\\n' \"${{COMMAND[@]}}\" \"${{VOLUMES[@]}}\" \"$MEMORY\" \"${{LABELS[@]}}\" \"$RUN_USER\" \"$CPUS\"",
            header(&params(&c, &image(), &tag())).unwrap()
        );
        let out = std::process::Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "<sh>\n<-c>\n<echo \"$HOME\" $(id)>\n<--flag>\n</srv/data:/data:ro>\n<512m>\n<note=it's; $(x)>\n<1000:1000>\n<>\n"
        );
    }

    /// A release recorded before the run options existed has a header without them: the script
    /// must read that as "none" (under `set -u`), not stop on an unbound variable.
    #[test]
    fn a_header_from_before_the_run_options_reads_as_none() {
        let start = SCRIPT.find("# The run options:").unwrap();
        let end = start + SCRIPT[start..].find("LABELS=()\n").unwrap() + "LABELS=()\n".len();
        let script = format!(
            "set -euo pipefail\n{}printf '<%s>' \"$MEMORY$CPUS$LOG_DRIVER$RUN_USER\" ${{COMMAND[@]+\"${{COMMAND[@]}}\"}} ${{LABELS[@]+\"${{LABELS[@]}}\"}}",
            &SCRIPT[start..end]
        );
        let out = std::process::Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "<>");
        // With the header's values, they stay.
        let with = format!("MEMORY=1g\nCOMMAND=(a 'b c')\n{script}");
        let out = std::process::Command::new("bash").arg("-c").arg(&with).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "<1g><a><b c>");
    }

    /// The page's text is an operator's free text: it reaches the script as one quoted value,
    /// whatever it holds, and runs nothing.
    #[test]
    fn the_maintenance_message_is_one_quoted_value() {
        let message = "Back at 14:00 — $(touch /tmp/x) `id` \"quoted\" 'single'";
        let script = maintenance_script("#!/bin/bash\n", true, message, 120, false).unwrap();
        let values = crate::fake::header_values(&script);
        assert_eq!(values["MAINTENANCE_MESSAGE"], message);
        assert_eq!((values["MAINTENANCE"].as_str(), values["MAINTENANCE_RETRY_AFTER"].as_str()), ("on", "120"));
        assert_eq!(values["MAINTENANCE_HEALTH"], "pass");
    }

    #[test]
    fn the_example_user_data_is_what_the_cli_generates() {
        let example = include_str!("../../examples/user-data.sh");
        assert_eq!(
            example,
            user_data(&[ParameterName::parse("/ec2-deploy/production/my-service").unwrap()], Some("ec2-deploy-launch"))
                .unwrap(),
            "run `ec2-deploy user-data --release-parameter /ec2-deploy/production/my-service --lifecycle-hook ec2-deploy-launch > examples/user-data.sh`"
        );
    }

    /// bash before 4.4 (Amazon Linux 2 has 4.2) fails on `"${a[@]}"` of an empty array under
    /// `set -u`: every expansion of an array that may be empty must be `${a[@]+"${a[@]}"}`.
    #[test]
    fn exit_codes_name_steps() {
        assert_eq!(step_for_exit_code(15), "health check");
        assert_eq!(step_for_exit_code(1), "script");
    }
}
