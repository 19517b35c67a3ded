//! The bad-input catalogue: each case runs the real binary as the runner would, and must exit 2
//! with a message naming the input (or config path) and what is expected — before anything in AWS
//! is even asked. AWS_ENDPOINT_URL points at a local listener that counts connections: it must
//! see none, so nothing can have changed.

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A listener standing in for AWS that only counts the connections it gets.
fn aws_that_counts() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, count)
}

const GOOD: &[(&str, &str)] = &[("ecr-repository", "shop"), ("targets", "Role=web"), ("image-tag", "v1")];

struct Case {
    name: &'static str,
    inputs: Vec<(&'static str, String)>,
    remove: Vec<&'static str>,
    config: Option<&'static str>,
    sha: bool,
    expect: Vec<&'static str>,
}

fn case(name: &'static str, input: &'static str, value: &str, expect: &[&'static str]) -> Case {
    Case {
        name,
        inputs: vec![(input, value.to_string())],
        remove: vec![],
        config: None,
        sha: true,
        expect: expect.to_vec(),
    }
}

fn config(name: &'static str, yaml: &'static str, extra: &[(&'static str, &str)], expect: &[&'static str]) -> Case {
    Case {
        name,
        inputs: extra.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        remove: vec!["ecr-repository", "targets"],
        config: Some(yaml),
        sha: true,
        expect: expect.to_vec(),
    }
}

/// The action running one of the CLI's operating commands (input `operation`) with these arguments.
fn operation(name: &'static str, op: &'static str, args: &'static str, expect: &[&'static str]) -> Case {
    Case {
        name,
        inputs: vec![("operation", op.to_string()), ("operation-args", args.to_string())],
        remove: vec!["image-tag"],
        config: None,
        sha: true,
        expect: expect.to_vec(),
    }
}

fn catalogue() -> Vec<Case> {
    let long_tag = "t".repeat(200);
    let mut cases = vec![
        Case {
            name: "no repository",
            inputs: vec![],
            remove: vec!["ecr-repository"],
            config: None,
            sha: true,
            expect: vec!["input `ecr-repository`: is required"],
        },
        Case {
            name: "no targets",
            inputs: vec![],
            remove: vec!["targets"],
            config: None,
            sha: true,
            expect: vec!["input `targets`: is required"],
        },
        Case {
            name: "no tag, no GITHUB_SHA",
            inputs: vec![],
            remove: vec!["image-tag"],
            config: None,
            sha: false,
            expect: vec!["input `image-tag`: is required outside GitHub Actions"],
        },
        case("empty tag key", "targets", "=x", &["input `targets`", "the tag key is empty"]),
        case("empty tag value", "targets", "Key=", &["input `targets`", "a value of tag \"Key\" is empty"]),
        case("tag without =", "targets", "Role", &["input `targets`", "expected Key=Value"]),
        case("six tag keys", "targets", "A=1\nB=1\nC=1\nD=1\nE=1\nF=1", &["input `targets`", "at most 5"]),
        case("six tag values", "targets", "K=a,b,c,d,e,f", &["input `targets`", "at most 5 per key"]),
        case("tag key twice", "targets", "K=a\nK=b", &["input `targets`", "appears twice"]),
        case("reserved tag key", "targets", "aws:autoscaling=x", &["input `targets`", "reserved by AWS"]),
        case("concurrency not a number", "max-concurrency", "abc", &["input `max-concurrency`", "expected a number"]),
        case("concurrency zero", "max-concurrency", "0", &["input `max-concurrency`", "1 or more"]),
        case("concurrency over 100%", "max-concurrency", "101%", &["input `max-concurrency`", "100%"]),
        case("concurrency negative", "max-concurrency", "-1", &["input `max-concurrency`"]),
        case("errors not a number", "max-errors", "x", &["input `max-errors`", "expected a number"]),
        case("errors over 100%", "max-errors", "150%", &["input `max-errors`"]),
        case("errors fractional", "max-errors", "1.5", &["input `max-errors`"]),
        case("timeout zero", "command-timeout", "0", &["input `command-timeout`", "from 30 to 172800"]),
        case("timeout negative", "command-timeout", "-5", &["input `command-timeout`"]),
        case("timeout huge", "command-timeout", "999999999", &["input `command-timeout`"]),
        case("timeout too short", "command-timeout", "10", &["input `command-timeout`"]),
        case("timeout not a number", "command-timeout", "abc", &["input `command-timeout`"]),
        case("old timeout name, bad value", "timeout", "abc", &["input `timeout`", "a whole number"]),
        Case {
            name: "timeout under both names",
            inputs: vec![("command-timeout", "600".into()), ("timeout", "300".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `timeout`", "keep only `command-timeout`"],
        },
        case("health timeout zero", "health-check-timeout", "0", &["input `health-check-timeout`", "from 1 to 3600"]),
        case("health timeout huge", "health-check-timeout", "4000", &["input `health-check-timeout`"]),
        Case {
            name: "health timeout not within timeout",
            inputs: vec![("health-check-timeout", "600".into()), ("command-timeout", "600".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `health-check-timeout`", "does not fit in `command-timeout`"],
        },
        case("port without colon", "ports", "80", &["input `ports`", "host:container"]),
        case("port zero", "ports", "0:80", &["input `ports`", "1 to 65535"]),
        case("port too high", "ports", "70000:80", &["input `ports`"]),
        case("port not a number", "ports", "a:b", &["input `ports`"]),
        case("env name starts with a digit", "env", "1ABC=x", &["input `env`", "not a valid variable name"]),
        case("env without =", "env", "NOEQUALS", &["input `env`", "expected KEY=VALUE"]),
        case("env name with a dash", "env", "A-B=x", &["input `env`", "not a valid variable name"]),
        case("env set twice", "env", "A=1\nA=2", &["input `env`", "A is set twice"]),
        case("build arg without name", "build-args", "=x", &["input `build-args`"]),
        case("build not a boolean", "build", "maybe", &["input `build`", "expected true or false"]),
        case("dry-run not a boolean", "dry-run", "perhaps", &["input `dry-run`", "expected true or false"]),
        case("canary not a boolean", "canary", "sometimes", &["input `canary`"]),
        case("rollback not a boolean", "rollback", "y3s", &["input `rollback`"]),
        case("proxy not a boolean", "proxy", "caddy", &["input `proxy`", "expected true or false"]),
        case("command with an open quote", "command", "sh -c 'echo", &["input `command`", "a quote is not closed"]),
        case(
            "volume with a relative host path",
            "volumes",
            "data/uploads:/app/uploads",
            &["input `volumes`", "relative path is not allowed"],
        ),
        case("volume escaping with ..", "volumes", "/srv/../etc:/etc", &["input `volumes`", "without . or .. parts"]),
        case("volume into a relative path", "volumes", "/srv/data:data", &["input `volumes`", "must be absolute"]),
        case("volume with a bad mode", "volumes", "/srv/data:/data:rx", &["input `volumes`", "ro or rw"]),
        case("volume mounted twice", "volumes", "/a:/data\n/b:/data", &["input `volumes`", "/data is mounted twice"]),
        case("memory without a unit", "memory", "512", &["input `memory`", "512m or 2g"]),
        case("memory with a fraction", "memory", "1.5g", &["input `memory`"]),
        case("memory below docker's floor", "memory", "4m", &["input `memory`", "minimum of 6m"]),
        case("cpus zero", "cpus", "0", &["input `cpus`", "0.5 or 2"]),
        case("cpus not a number", "cpus", "two", &["input `cpus`"]),
        case(
            "unknown log driver",
            "log-driver",
            "loki",
            &["input `log-driver`", "not a logging driver Docker ships with"],
        ),
        case(
            "log options without a driver",
            "log-options",
            "max-size=10m",
            &["input `log-options`", "needs `log-driver`"],
        ),
        case("log option without =", "log-options", "max-size", &["input `log-options`", "key=value"]),
        case("label of ec2-deploy's own", "labels", "ec2-deploy.config=x", &["input `labels`", "ec2-deploy's own"]),
        case("user with a space", "user", "app user", &["input `user`", "1000:1000"]),
        case("platform of another OS", "platform", "windows/amd64", &["input `platform`", "linux/arm64"]),
        case(
            "build secret from an unset variable",
            "build-secrets",
            "id=npmrc,env=NPM_TOKEN",
            &["input `build-secrets`", "NPM_TOKEN is not set for this step"],
        ),
        case(
            "build secret from a missing file",
            "build-secrets",
            "id=npmrc,src=.npmrc",
            &["input `build-secrets`", ".npmrc is not a file in the workspace"],
        ),
        case(
            "build secret without a source",
            "build-secrets",
            "id=npmrc",
            &["input `build-secrets`", "needs env=VARIABLE or src=PATH"],
        ),
        case(
            "build secret id twice",
            "build-secrets",
            "id=a,src=Dockerfile\nid=a,src=Dockerfile",
            &["input `build-secrets`", "id a is given twice"],
        ),
        case("platform without an OS", "platform", "arm64", &["input `platform`"]),
        case(
            "pre-deploy with an open quote",
            "pre-deploy",
            "bin/migrate 'up",
            &["input `pre-deploy`", "a quote is not closed"],
        ),
        case("pre-deploy target not an instance id", "pre-deploy-target", "web-1", &["input `pre-deploy-target`"]),
        case(
            "pre-deploy target without pre-deploy",
            "pre-deploy-target",
            "i-0123456789abcdef0",
            &["input `pre-deploy-target`", "needs `pre-deploy`"],
        ),
        Case {
            name: "pre-deploy timeout not within the command timeout",
            inputs: vec![("pre-deploy", "bin/migrate".into()), ("pre-deploy-timeout", "900".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `pre-deploy-timeout`", "does not fit in `command-timeout`"],
        },
        case("proxy image with a space", "proxy-image", "caddy 2", &["input `proxy-image`"]),
        case("proxy image with a bad digest", "proxy-image", "caddy@sha256:abc", &["input `proxy-image`"]),
        case("trusted hop that is not an address", "proxy-trusted", "10.0.0.0/40", &["input `proxy-trusted`", "CIDR range"]),
        case("trusting none and some", "proxy-trusted", "none\n10.0.0.0/8", &["input `proxy-trusted`", "`none` trusts no hop"]),
        case("rollback to a version that is no number", "rollback-to", "latest", &["input `rollback-to`", "a version of the release record"]),
        case("rollback to version 0", "rollback-to", "0", &["input `rollback-to`", "a version of the release record"]),
        case("batch size zero", "batch-size", "0", &["input `batch-size`"]),
        case(
            "on-offline neither fail nor skip",
            "on-offline",
            "maybe",
            &["input `on-offline`", "expected fail or skip"],
        ),
        case("batch size over 100%", "batch-size", "200%", &["input `batch-size`"]),
        case("repository with capitals", "ecr-repository", "Upper", &["input `ecr-repository`", "lowercase"]),
        case("repository with empty part", "ecr-repository", "a//b", &["input `ecr-repository`"]),
        case("repository too short", "ecr-repository", "x", &["input `ecr-repository`"]),
        case("tag starting with a dot", "image-tag", ".hidden", &["input `image-tag`", "Docker tag"]),
        case("tag with a space", "image-tag", "has space", &["input `image-tag`"]),
        case("tag too long", "image-tag", &long_tag, &["input `image-tag`", "up to 128"]),
        // A value cut for the message must be cut on characters: these once panicked (exit 101).
        case(
            "a long multibyte tag value",
            "targets",
            &format!("Role=x{}", "é".repeat(300)),
            &["input `targets`", "longer than 256 characters"],
        ),
        case(
            "a long multibyte tag key",
            "targets",
            &format!("{}=x", "日".repeat(129)),
            &["input `targets`", "longer than 128 characters"],
        ),
        case("a long multibyte env line", "env", &"é".repeat(300), &["input `env`", "expected KEY=VALUE"]),
        // What a build needs on disk is checked with the inputs, before any AWS call.
        case(
            "a build context that is not there",
            "context",
            "app",
            &["input `context`", "the build context app is not a directory"],
        ),
        case(
            "a build context without a Dockerfile",
            "context",
            "empty",
            &["input `file`", "the build context empty has no Dockerfile"],
        ),
        case(
            "a Dockerfile that is not there",
            "file",
            "deploy/Dockerfile",
            &["input `file`", "deploy/Dockerfile is not a file"],
        ),
        // The workspace's Dockerfile is `FROM scratch`: one stage, without a name.
        case("drain timeout not a number", "drain-timeout", "30s", &["input `drain-timeout`"]),
        case("a target that is no stage", "target", "app", &["input `target`", "no stage of the Dockerfile is named \"app\""]),
        case(
            "a tag ec2-deploy keeps for itself",
            "image-tag",
            "ec2-deploy-cache-deps",
            &["input `image-tag`", "starts like the tags ec2-deploy keeps for itself"],
        ),
        case("short digest", "image-digest", "sha256:abc", &["input `image-digest`", "64 hex digits"]),
        case(
            "digest of another kind",
            "image-digest",
            "md5:0123456789abcdef0123456789abcdef",
            &["input `image-digest`"],
        ),
        Case {
            name: "rollback with a digest",
            inputs: vec![("rollback", "true".into()), ("image-digest", format!("sha256:{}", "a".repeat(64)))],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `rollback`", "cannot go with `image-digest`"],
        },
        case("converge not a boolean", "converge", "sometimes", &["input `converge`", "expected true or false"]),
        Case {
            name: "converge with a digest",
            inputs: vec![("converge", "true".into()), ("image-digest", format!("sha256:{}", "a".repeat(64)))],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `converge`", "cannot go with `image-digest`"],
        },
        Case {
            name: "converge and rollback at once",
            inputs: vec![("converge", "true".into()), ("rollback", "true".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `converge`", "cannot go with `rollback`"],
        },
        case("container name starting with a dash", "container-name", "-bad", &["input `container-name`"]),
        case(
            "container name ending in -previous",
            "container-name",
            "app-previous",
            &["input `container-name`", "not ending in -previous"],
        ),
        case(
            "health path without slash",
            "health-check-path",
            "health",
            &["input `health-check-path`", "starting with /"],
        ),
        case("health path with a space", "health-check-path", "/a b", &["input `health-check-path`"]),
        Case {
            name: "health path without ports",
            inputs: vec![("health-check-path", "/health".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `health-check-path`", "needs `ports`"],
        },
        case("registry with a scheme", "registry", "https://x.example", &["input `registry`", "no scheme"]),
        case("registry with a path", "registry", "host/path", &["input `registry`"]),
        case("region in capitals", "aws-region", "EU-WEST-1", &["input `aws-region`", "eu-west-1"]),
        case("region without parts", "aws-region", "nowhere", &["input `aws-region`"]),
        case("target group not an ARN", "target-groups", "not-an-arn", &["input `target-groups`", "target group ARN"]),
        case("environment URL not http", "environment-url", "ftp://x", &["input `environment-url`", "http(s) URL"]),
        case("release parameter reserved", "release-parameter", "/aws/x", &["input `release-parameter`"]),
        case("release parameter with a space", "release-parameter", "/a b", &["input `release-parameter`"]),
        case("alarm selector with a star inside", "alarms", "shop*5xx", &["input `alarms`", "name prefix ending in *"]),
        case("bake time without alarms", "bake-time", "60", &["input `bake-time`", "needs `alarms`"]),
        case("ignore-alarms-at-start without alarms", "ignore-alarms-at-start", "true", &["input `ignore-alarms-at-start`", "needs `alarms`"]),
        case("bake time past an hour", "bake-time", "7200", &["input `bake-time`", "from 0 to 3600"]),
        case("environment name", "environment", "bad env!", &["input `environment`"]),
        case("control character in a value", "image-tag", "v1\u{7}", &["input `image-tag`", "control character"]),
        case("control character in a list", "targets", "Role=web\u{1b}", &["input `targets`", "control character"]),
        config(
            "unknown key in the config",
            "environments:\n  prod:\n    targets: [Role=web]\n    secretid: x\n",
            &[("environment", "prod")],
            &["environments.prod: unknown field `secretid`", "line 4"],
        ),
        config(
            "YAML syntax error",
            "defaults:\n  targets: [Role=web\n",
            &[],
            &["config file .github/ec2-deploy.yml", "line"],
        ),
        config(
            "config value of the wrong shape",
            "defaults:\n  targets: {a: {b: c}}\n",
            &[],
            &["config file .github/ec2-deploy.yml"],
        ),
        config(
            "environment not in the config",
            "environments:\n  prod:\n    targets: [Role=web]\n",
            &[("environment", "staging")],
            &["input `environment`", "(it has: prod)"],
        ),
        config("run-only input in the config", "defaults:\n  dry-run: true\n", &[], &["unknown field `dry-run`"]),
        config(
            "bad value in a service",
            "defaults:\n  ecr-repository: shop\n  targets: [Role=web]\n  services:\n    web:\n      memory: lots\n",
            &[],
            &["`defaults.services.web.memory` in .github/ec2-deploy.yml"],
        ),
        config(
            "a service's own services",
            "defaults:\n  services:\n    web:\n      services: {}\n",
            &[],
            &["defaults.services.web: a service cannot have `services` of its own"],
        ),
        config(
            "a service name that cannot name a container",
            "defaults:\n  ecr-repository: shop\n  targets: [Role=web]\n  services:\n    Web!: {}\n",
            &[],
            &["`services.Web!`", "rename the service or give it a `container-name`"],
        ),
        config(
            "two services on one container",
            "defaults:\n  ecr-repository: shop\n  targets: [Role=web]\n  container-name: shop\n  services:\n    web: {}\n    worker: {}\n",
            &[],
            &["services web and worker: both run a container named shop"],
        ),
        config(
            "a service the config does not list",
            "defaults:\n  ecr-repository: shop\n  targets: [Role=web]\n  services:\n    web: {}\n",
            &[("service", "cron")],
            &["input `service`", "(it has: web)"],
        ),
        config(
            "bad value in the config",
            "environments:\n  prod:\n    ecr-repository: shop\n    targets: [Role=web]\n    max-errors: lots\n",
            &[("environment", "prod")],
            &["`environments.prod.max-errors` in .github/ec2-deploy.yml", "expected a number"],
        ),
        case("an operation that does not exist", "operation", "dance", &["input `operation`: expected one of deploy, rollback, converge, releases, status, logs, exec, maintenance, got \"dance\""]),
        case("operation-args with a deploy", "operation-args", "--lines 5", &["input `operation-args`: is for the operations releases, status, logs, exec and maintenance"]),
        operation("logs --follow in a workflow", "logs", "--follow", &["input `operation-args`: `--follow` reads until it is interrupted"]),
        operation("a flag the operation does not have", "logs", "--lines 0", &["input `operation-args`: for `logs`", "--lines"]),
        operation("unbalanced quotes in operation-args", "exec", "-- sh -c 'oops", &["input `operation-args`: unbalanced quotes"]),
        operation("an input error under an operation", "releases", "--max-errors lots", &["input `max-errors`: expected a number"]),
        Case {
            name: "explicit config file missing",
            inputs: vec![("config", "deploy/missing.yml".into())],
            remove: vec![],
            config: None,
            sha: true,
            expect: vec!["input `config`: cannot read deploy/missing.yml"],
        },
    ];
    cases.sort_by_key(|c| c.name);
    cases
}

#[test]
fn every_bad_input_exits_2_naming_the_input_before_any_aws_call() {
    let (aws, connections) = aws_that_counts();
    let cases = catalogue();
    assert!(cases.len() >= 60, "the catalogue has {} cases", cases.len());
    let mut problems = vec![];
    for c in &cases {
        let dir = tempfile::tempdir().unwrap();
        // A workspace with a Dockerfile, and an empty folder.
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        if let Some(yaml) = c.config {
            std::fs::create_dir_all(dir.path().join(".github")).unwrap();
            std::fs::File::create(dir.path().join(".github/ec2-deploy.yml"))
                .unwrap()
                .write_all(yaml.as_bytes())
                .unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ec2-deploy"));
        cmd.arg("action").env_clear().current_dir(dir.path());
        cmd.env("AWS_ENDPOINT_URL", &aws)
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x");
        cmd.env("GITHUB_ACTIONS", "true").env("GITHUB_WORKSPACE", dir.path());
        if c.sha {
            cmd.env("GITHUB_SHA", "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        }
        for (k, v) in GOOD.iter().filter(|(k, _)| !c.remove.contains(k)) {
            cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
        }
        for (k, v) in &c.inputs {
            cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
        }
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Annotations escape newlines; read the message as a person would.
        let text = text.replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%");
        if out.status.code() != Some(2) {
            problems.push(format!("{}: exit {:?}\n{text}", c.name, out.status.code()));
            continue;
        }
        for want in &c.expect {
            if !text.contains(want) {
                problems.push(format!("{}: {want:?} not in\n{text}", c.name));
            }
        }
    }
    assert!(problems.is_empty(), "{} of {} cases wrong:\n\n{}", problems.len(), cases.len(), problems.join("\n\n"));
    assert_eq!(connections.load(Ordering::SeqCst), 0, "bad input reached AWS");
}
