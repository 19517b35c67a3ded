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
