//! The container's run options on real instances: what `docker inspect` shows there, a change of
//! one option alone restarting the container, and a rollback bringing the previous options back.

use super::support::{unique, Bed};
use super::{inputs, run_with, set, version_of};

/// One instance's app container, as `docker inspect` reports it.
fn inspect(bed: &Bed, id: &str, container: &str) -> serde_json::Value {
    let out = bed.on_instance(id, &["docker", "inspect", "--type", "container", container]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn run_options_reach_docker_a_change_restarts_and_a_rollback_restores_them() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("opts");
    bed.create_repository(&repo);
    let volume = unique("data");
    let with_options = |memory: &str| {
        let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
        set(&mut i, "release-parameter", &format!("/ec2-deploy/test/{repo}"));
        // The demo app ignores arguments other than --probe: it serves whatever CMD says.
        set(&mut i, "command", "serve --mode 'two words'");
        set(&mut i, "volumes", &format!("{volume}:/data\n/etc/hostname:/host-name:ro"));
        set(&mut i, "memory", memory);
        set(&mut i, "cpus", "0.5");
        set(&mut i, "log-driver", "json-file");
        set(&mut i, "log-options", "max-size=1m\nmax-file=2");
        set(&mut i, "labels", "team=web");
        set(&mut i, "user", "1000:1000");
        i
    };

    let r = run_with(&bed, with_options("64m"));
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("  run        command serve --mode 'two words'; volume "), "{}", r.stdout);
    let mut started = vec![];
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{id}");
        let c = inspect(&bed, id, &repo);
        assert_eq!(c["Config"]["Cmd"], serde_json::json!(["serve", "--mode", "two words"]), "{id}");
        assert_eq!(c["HostConfig"]["Memory"], 64 << 20, "{id}");
        assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000, "{id}");
        assert_eq!(c["HostConfig"]["LogConfig"]["Type"], "json-file", "{id}");
        assert_eq!(
            c["HostConfig"]["LogConfig"]["Config"],
            serde_json::json!({"max-size": "1m", "max-file": "2"}),
            "{id}"
        );
        assert_eq!(c["Config"]["Labels"]["team"], "web", "{id}");
        assert_eq!(c["Config"]["User"], "1000:1000", "{id}");
        let mounts: Vec<(String, String, bool)> = c["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["Destination"].as_str().unwrap().into(),
                    m["Type"].as_str().unwrap().into(),
                    m["RW"].as_bool().unwrap(),
                )
            })
            .collect();
        assert!(mounts.contains(&("/data".into(), "volume".into(), true)), "{id}: {mounts:?}");
        assert!(mounts.contains(&("/host-name".into(), "bind".into(), false)), "{id}: {mounts:?}");
        started.push(c["State"]["StartedAt"].as_str().unwrap().to_string());
    }

    // The same release with only the memory limit changed: a new container on every instance.
    let r = run_with(&bed, with_options("96m"));
    assert_eq!(r.code, 0, "{}", r.log());
    let instances: serde_json::Value = serde_json::from_str(&r.outputs["instances"]).unwrap();
    assert!(instances.as_array().unwrap().iter().all(|i| i["outcome"] == "deployed"), "{instances}");
    for (n, id) in web.ids.iter().enumerate() {
        let c = inspect(&bed, id, &repo);
        assert_eq!(c["HostConfig"]["Memory"], 96 << 20, "{id}");
        assert_ne!(c["State"]["StartedAt"].as_str().unwrap(), started[n], "{id} was not restarted");
    }

    // A rollback goes back to the release as recorded: 64m again, with every other option.
    let mut i = with_options("96m");
    set(&mut i, "rollback", "true");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        let c = inspect(&bed, id, &repo);
        assert_eq!(c["HostConfig"]["Memory"], 64 << 20, "{id} after the rollback");
        assert_eq!(c["Config"]["Cmd"], serde_json::json!(["serve", "--mode", "two words"]), "{id}");
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{id}");
    }
}

/// What the registry holds for `repo:tag`: its image config (architecture, os, …), asked of the
/// registry directly with the ECR token, as a pull would.
fn image_config(bed: &Bed, repo: &str, tag: &str) -> serde_json::Value {
    let password = bed.aws(&["ecr", "get-login-password"]);
    let registry = bed.get("TESTBED_REGISTRY");
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-u", &format!("AWS:{}", password.trim())])
            .args(["-H", "Accept: application/vnd.docker.distribution.manifest.v2+json"])
            .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
            .arg(format!("http://{registry}/v2/{repo}/{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let manifest = get(&format!("manifests/{tag}"));
    get(&format!("blobs/{}", manifest["config"]["digest"].as_str().unwrap()))
}

/// `platform: linux/arm64` builds for that platform: the registry records arm64 for the image (what
/// a Graviton instance's pull selects by). No instance here is arm64, and the demo's static binary
/// is x86 whatever the label says, so the deploy itself runs as usual: this checks what was built.
#[test]
fn platform_builds_the_image_for_that_platform() {
    let bed = Bed::load();
    let suite = unique("s");
    let _web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("arm");
    bed.create_repository(&repo);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(image_config(&bed, &repo, "v1")["architecture"], "amd64");

    let mut i = inputs(&bed, &repo, &suite, "v2", "VERSION=v2");
    set(&mut i, "platform", "linux/arm64");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("  image      build for linux/arm64 and push"), "{}", r.stdout);
    let config = image_config(&bed, &repo, "v2");
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("arm64")));
}

/// The content of `path` in `container` on instance `id` (`docker cp` gives a tar of one file).
pub(super) fn file_in_container(bed: &Bed, id: &str, container: &str, path: &str) -> String {
    let out = bed.on_instance(id, &["docker", "cp", &format!("{container}:{path}"), "-"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size =
        usize::from_str_radix(String::from_utf8_lossy(&out.stdout[124..135]).trim_end_matches('\0').trim(), 8).unwrap();
    String::from_utf8_lossy(&out.stdout[512..512 + size]).into_owned()
}

/// `build-secrets` from a variable of the step and from a workspace file reach the build's
/// `RUN --mount=type=secret` steps (each writes its secret's length into the image), and neither
/// value appears in any process's arguments, the image's history or config, the SSM command, the
/// instances' output, the log, the summary or the outputs.
#[test]
fn build_secrets_reach_the_build_and_their_values_appear_nowhere_else() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("bsec");
    bed.create_repository(&repo);
    let values = [unique("npm-token-value-k3"), unique("build-config-value-z8")];

    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "file", "Dockerfile.secrets");
    i.retain(|(k, _)| k != "target"); // one stage
    set(&mut i, "build-secrets", "id=token,env=NPM_TOKEN\nid=config,src=build/config.env");
    let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut action = super::support::ActionRun::new(&borrowed);
    // BuildKit's cache key of a RUN step leaves its secrets out: without this run's own ENV line
    // before them, a run after another one on the same builder reuses the steps that measured the
    // other run's values.
    std::fs::write(
        action.workspace.join("Dockerfile.secrets"),
        format!("FROM scratch\nCOPY demo-app /demo-app\nENV EC2_DEPLOY_TEST_RUN={repo}\n\
         RUN --mount=type=secret,id=token [\"/demo-app\", \"--length-of\", \"/run/secrets/token\", \"/token-length\"]\n\
         RUN --mount=type=secret,id=config [\"/demo-app\", \"--length-of\", \"/run/secrets/config\", \"/config-length\"]\n\
         ENV DEMO_VERSION=v1 PORT=3000\nENTRYPOINT [\"/demo-app\"]\n"),
    )
    .unwrap();
    std::fs::create_dir_all(action.workspace.join("build")).unwrap();
    std::fs::write(action.workspace.join("build/config.env"), &values[1]).unwrap();
    action.env = vec![("NPM_TOKEN".into(), values[0].clone())];

    // Every process's arguments on the machine, sampled for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (stop, seen, values) = (stop.clone(), seen.clone(), values.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
                for line in String::from_utf8_lossy(&ps.stdout).lines() {
                    if values.iter().any(|v| line.contains(v.as_str())) {
                        seen.lock().unwrap().push(line.to_string());
                    }
                }
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            samples
        })
    };
    let r = action.run(&bed);
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(samples > 10, "the process sampler barely ran ({samples} samples)");
    assert_eq!(*seen.lock().unwrap(), Vec::<String>::new(), "build secret values in process arguments");
    assert!(r.stdout.contains("build secrets: token (env NPM_TOKEN), config (file build/config.env)"), "{}", r.stdout);

    // The build saw each secret whole.
    assert_eq!(file_in_container(&bed, &web.ids[0], &repo, "/token-length"), values[0].len().to_string());
    assert_eq!(file_in_container(&bed, &web.ids[0], &repo, "/config-length"), values[1].len().to_string());

    let docker = |args: &[&str]| {
        let out = std::process::Command::new(bed.get("TESTBED_DOCKER"))
            .env("DOCKER_HOST", bed.get("DOCKER_HOST"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let image = &r.outputs["image"];
    let history = docker(&["history", "--no-trunc", image]);
    assert!(history.contains("--mount=type=secret") || history.contains("/token-length"), "{history}");
    let config = docker(&["image", "inspect", image]);
    let (command, invocations) = bed.commands_and_outputs(&r.outputs["command-id"]);
    // The runner's own mask command carries the value (and hides it from the log): not a leak.
    let stdout: String = r.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    for v in &values {
        for (place, text) in [
            ("the image history", &history),
            ("the image config", &config),
            ("the SSM command text", &command),
            ("the instances' output", &invocations),
            ("the action's stdout", &stdout),
            ("the action's stderr", &r.stderr),
            ("the job summary", &r.summary),
            ("the step outputs", &r.outputs_raw),
        ] {
            assert!(!text.contains(v.as_str()), "a build secret value appears in {place}");
        }
    }
    // The variable's value was masked for the runner (in case a build step prints it).
    assert!(r.stdout.contains(&format!("::add-mask::{}", values[0])));
}

/// `pre-deploy` on the bed: a command that writes a marker into a named volume runs on one
/// instance only (the volume is per Docker engine: each instance has its own), before the
/// rollout, and its output is in the log; one that exits 3 switches nothing, fails the run and
/// puts its output in the summary.
#[test]
fn pre_deploy_runs_once_before_the_rollout_and_a_failing_one_switches_nothing() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("pre");
    bed.create_repository(&repo);
    let volume = unique("marker");
    let base = |tag: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "release-parameter", &format!("/ec2-deploy/test/{repo}"));
        set(&mut i, "volumes", &format!("{volume}:/marker"));
        i
    };
    let r = run_with(&bed, base("v1"));
    assert_eq!(r.code, 0, "{}", r.log());

    // The demo image's entrypoint is the app: these words are its arguments.
    // It prints a line (its configuration, as the app does at start): the log shows it.
    let mut i = base("v2");
    set(&mut i, "pre-deploy", "--length-of /etc/hostname /marker/ran");
    set(&mut i, "env", "DEMO_LOG_ENV=GREETING\nGREETING=hello-from-the-migration");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    let pre = r.stdout.find("Pre-deploy succeeded").unwrap_or_else(|| panic!("{}", r.stdout));
    let printed = r.stdout.find("  | GREETING=hello-from-the-migration").unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(printed < pre, "{}", r.stdout);
    assert!(
        r.summary.contains("Pre-deploy: `--length-of /etc/hostname /marker/ran` on `i-")
            && r.summary.contains("` succeeded in "),
        "{}",
        r.summary
    );
    let first_switch = r.stdout.find("(deploy)").unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(pre < first_switch, "the rollout started before the pre-deploy ended:\n{}", r.stdout);
    let has_marker: Vec<&String> = web
        .ids
        .iter()
        .filter(|id| {
            let out = bed.on_instance(id, &["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
            let mountpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
            bed.on_instance(id, &["test", "-f", &format!("{mountpoint}/ran")]).status.success()
        })
        .collect();
    assert_eq!(has_marker.len(), 1, "the marker is on {has_marker:?}");
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
    }

    // A pre-deploy that exits 3: no instance switched, exit 1, its output in the summary.
    let mut i = base("v3");
    set(&mut i, "pre-deploy", "--exit 3");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 1, "{}", r.log());
    assert!(r.summary.contains("pre-deploy failed on i-"), "{}", r.summary);
    assert!(r.summary.contains("pre-deploy exited with 3"), "{}", r.summary);
    assert!(r.summary.contains("migration 7 failed, exiting with 3 as asked"), "{}", r.summary);
    assert!(!r.stdout.contains("(deploy)"), "a deploy command was sent:\n{}", r.stdout);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
    }
}
