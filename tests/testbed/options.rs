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
