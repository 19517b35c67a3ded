//! Zero downtime without a load balancer: the per-instance proxy (Caddy, the bed's image built
//! from the official static binary) holds the port, and each swap moves it to the new container
//! once that is healthy. Load goes straight at an instance's published port.

use std::time::Duration;

use super::support::{http_get_with, unique, wait_until, Bed, Load, LoadCount};
use super::{inputs, run_with, set, version_of};

fn report(what: &str, count: &LoadCount) {
    println!("{what}: {} requests, {} failed, answers {:?}", count.ok + count.failed, count.failed, count.bodies);
}

fn names(bed: &Bed, id: &str) -> Vec<String> {
    let out = bed.on_instance(id, &["docker", "ps", "--format", "{{.Names}} {{.Ports}}"]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn detail<'a>(summary: &'a str, id: &str) -> &'a str {
    summary.lines().find(|l| l.starts_with(&format!("| `{id}`"))).unwrap_or("")
}

/// The `port gap N ms` an instance's row reports, if any.
fn gap_ms(summary: &str, id: &str) -> Option<u64> {
    let row = detail(summary, id);
    let at = row.find("port gap ")?;
    row[at + 9..].split_whitespace().next()?.parse().ok()
}

#[test]
fn one_instance_without_a_load_balancer_drops_no_request_through_a_deploy_and_a_failed_release() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let repo = unique("proxy");
    bed.create_repository(&repo);
    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    assert!(r1.stdout.contains("proxy      Caddy holds port 3000 on each instance"), "{}", r1.stdout);
    assert!(r1.summary.contains("Mode: proxy on each instance (port 3000)"), "{}", r1.summary);
    // The proxy holds the port; the app publishes nothing.
    let running = names(&bed, id);
    assert!(
        running.iter().any(|l| l.starts_with(&format!("ec2-deploy-proxy-{repo} ")) && l.contains(":3000->80/tcp")),
        "{running:?}"
    );
    assert!(
        running.iter().any(|l| l.starts_with(&format!("{repo} ")) && !l.contains("->")),
        "the app publishes no port: {running:?}"
    );

    let load = Load::start(&format!("http://{ip}:3000/version"), 4);
    let r2 = run_with(&bed, inputs(&bed, &repo, &suite, "v2", "VERSION=v2"));
    let count = load.stop();
    report("deploy v1 -> v2, one instance, no load balancer", &count);
    assert_eq!(r2.code, 0, "{}", r2.log());
    assert!(count.ok + count.failed >= 2000, "too little load to tell: {count:?}");
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
    assert!(count.bodies.contains_key("v1") && count.bodies.contains_key("v2"), "{:?}", count.bodies);
    assert_eq!(version_of(ip).as_deref(), Some("v2"));

    // A release that never gets healthy: the proxy never moves, v2 answers throughout.
    let load = Load::start(&format!("http://{ip}:3000/version"), 4);
    let mut i = inputs(&bed, &repo, &suite, "v3", "VERSION=v3\nHEALTH=fail");
    set(&mut i, "health-check-timeout", "5");
    let r3 = run_with(&bed, i);
    let count = load.stop();
    report("a release failing its health check, one instance", &count);
    assert_eq!(r3.code, 1, "{}", r3.log());
    assert!(count.ok + count.failed >= 2000, "too little load to tell: {count:?}");
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
    assert_eq!(count.bodies.keys().collect::<Vec<_>>(), ["v2"], "only v2 answered");
    let row = detail(&r3.summary, id);
    assert!(row.contains("answered 503; the release that was running kept serving"), "{row}");
    assert_eq!(version_of(ip).as_deref(), Some("v2"));
    assert!(!names(&bed, id).iter().any(|l| l.contains("-next")), "the failed container is gone");

    // A rollback switches back the same way.
    let load = Load::start(&format!("http://{ip}:3000/version"), 4);
    let mut i = inputs(&bed, &repo, &suite, "ignored", "VERSION=ignored");
    set(&mut i, "rollback", "true");
    let r4 = run_with(&bed, i);
    let count = load.stop();
    report("a rollback v2 -> v1, one instance", &count);
    assert_eq!(r4.code, 0, "{}", r4.log());
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
    assert_eq!(version_of(ip).as_deref(), Some("v1"));
}

#[test]
fn three_instances_by_tags_at_full_concurrency_drop_no_request_behind_the_proxy() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("proxy3");
    bed.create_repository(&repo);
    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());

    let load = Load::start(&format!("http://{}:3000/version", web.ips[0]), 4);
    let mut i = inputs(&bed, &repo, &suite, "v2", "VERSION=v2");
    set(&mut i, "max-concurrency", "100%");
    let r2 = run_with(&bed, i);
    let count = load.stop();
    report("3 instances by tags at max-concurrency 100%, load on one", &count);
    assert_eq!(r2.code, 0, "{}", r2.log());
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"), "{ip}");
    }
}

#[test]
fn the_first_deploy_with_the_proxy_moves_the_port_reports_the_gap_and_a_rollback_moves_it_back() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("move");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let with = |tag: &str, proxy: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "proxy", proxy);
        set(&mut i, "release-parameter", &parameter);
        i
    };
    let r1 = run_with(&bed, with("v1", "false"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    assert!(r1.summary.contains("Mode: direct publishing (proxy: false)"), "{}", r1.summary);
    assert!(names(&bed, &web.ids[0])
        .iter()
        .any(|l| l.starts_with(&format!("{repo} ")) && l.contains(":3000->3000/tcp")));

    let load = Load::start(&format!("http://{}:3000/version", web.ips[0]), 4);
    let r2 = run_with(&bed, with("v2", "true"));
    let moved = load.stop();
    report("the move to the proxy (first deploy with it)", &moved);
    assert_eq!(r2.code, 0, "{}", r2.log());
    assert!(r2.stdout.contains("migration: the live release publishes port 3000 itself"), "{}", r2.stdout);
    let gaps: Vec<u64> = web.ids.iter().map(|id| gap_ms(&r2.summary, id).expect("a gap in each row")).collect();
    println!("migration gaps (ms, per instance, measured on the instance): {gaps:?}; failed requests at the instance under load: {}", moved.failed);
    // Bounded, not fast: alone on the bed a gap is about 1 s (718 and 1,346 ms, 2026-12-05), but
    // with the whole suite on 2 cores one took 5.4 s. Past 15 s the proxy counts as not started.
    assert!(gaps.iter().all(|g| *g < 15_000), "{gaps:?}");
    assert!(r2.summary.contains("this deploy moves each instance"), "{}", r2.summary);

    // A rollback to v1 (which published the port itself) takes the proxy away again.
    let mut i = with("ignored", "true");
    set(&mut i, "rollback", "true");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{ip}");
        let running = names(&bed, id);
        assert!(!running.iter().any(|l| l.starts_with("ec2-deploy-proxy-")), "{running:?}");
        assert!(
            running.iter().any(|l| l.starts_with(&format!("{repo} ")) && l.contains(":3000->3000/tcp")),
            "{running:?}"
        );
    }

    // Moved again by v3; once moved, deploys drop nothing and report no gap.
    let r3 = run_with(&bed, with("v3", "true"));
    assert_eq!(r3.code, 0, "{}", r3.log());
    assert!(web.ids.iter().all(|id| gap_ms(&r3.summary, id).is_some()), "{}", r3.summary);
    let load = Load::start(&format!("http://{}:3000/version", web.ips[0]), 4);
    let r4 = run_with(&bed, with("v4", "true"));
    let count = load.stop();
    report("the deploy after the move", &count);
    assert_eq!(r4.code, 0, "{}", r4.log());
    assert_eq!(gap_ms(&r4.summary, &web.ids[0]), None, "no second move: {}", r4.summary);
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
}

#[test]
fn the_proxy_and_its_route_survive_a_restart_of_the_proxy_and_of_the_docker_engine() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let repo = unique("restart");
    bed.create_repository(&repo);
    for tag in ["v1", "v2"] {
        let r = run_with(&bed, inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}")));
        assert_eq!(r.code, 0, "{}", r.log());
    }
    let out = bed.on_instance(id, &["docker", "restart", &format!("ec2-deploy-proxy-{repo}")]);
    assert!(out.status.success(), "{out:?}");
    wait_until("v2 through the restarted proxy", Duration::from_secs(20), || version_of(ip).as_deref() == Some("v2"));

    bed.testbed(&["docker-stop", id]);
    bed.testbed(&["docker-start", id]);
    wait_until("v2 after the engine restarted", Duration::from_secs(60), || version_of(ip).as_deref() == Some("v2"));

    // And the next deploy still moves it without a dropped request.
    let load = Load::start(&format!("http://{ip}:3000/version"), 4);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v3", "VERSION=v3"));
    let count = load.stop();
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
}

/// Behind a load balancer that terminates TLS, the app must see the client's scheme and address
/// (Rails' force_ssl, Django's SECURE_PROXY_SSL_HEADER, rate limits): the proxy passes on the
/// forwarded headers of a trusted hop (the bed's host is one, in 10.77.0.0/16, a private range as
/// an ALB's subnet is) and, with `proxy-trusted: none`, replaces them with its own view.
#[test]
fn the_app_sees_the_clients_scheme_and_address_from_a_trusted_hop_and_the_proxys_view_otherwise() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("fwd");
    bed.create_repository(&repo);
    let url = format!("http://{}:3000/forwarded", web.ips[0]);
    let as_the_alb = || {
        let headers = [
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "shop.example.com"),
        ];
        let (status, body) = http_get_with(&url, &headers).expect("the instance answers");
        assert_eq!(status, 200, "{body}");
        println!("the app saw: {body}");
        body.trim().to_string()
    };
    let field = |seen: &str, name: &str| {
        seen.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
    };

    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    let seen = as_the_alb();
    assert_eq!(field(&seen, "proto"), "https", "{seen}");
    assert_eq!(field(&seen, "host"), "shop.example.com", "{seen}");
    assert!(seen.contains(" for=203.0.113.7, "), "the client's address comes first: {seen}");

    // Trusting nobody: the same request reaches the app as the proxy saw it.
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "proxy-trusted", "none");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    let seen = as_the_alb();
    assert_eq!(field(&seen, "proto"), "http", "{seen}");
    assert!(!seen.contains("203.0.113.7") && !seen.contains("shop.example.com"), "{seen}");
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v1"));
}

/// `rollback-to`: back to a named version of the record, past the one before the live one, under
/// steady load on the instance's port: no request fails, and the record marks what it left.
#[test]
fn a_rollback_to_an_older_version_under_load_drops_no_request() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("back");
    bed.create_repository(&repo);
    for tag in ["v1", "v2", "v3"] {
        let r = run_with(&bed, inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}")));
        assert_eq!(r.code, 0, "{}", r.log());
    }
    let ip = &web.ips[0];
    let load = Load::start(&format!("http://{ip}:3000/version"), 4);
    let mut i = inputs(&bed, &repo, &suite, "ignored", "VERSION=ignored");
    set(&mut i, "rollback-to", "1");
    let r = run_with(&bed, i);
    let count = load.stop();
    report("a rollback v3 -> v1 (rollback-to: 1), one instance", &count);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(count.ok + count.failed >= 500, "too little load to tell: {count:?}");
    assert_eq!(count.failed, 0, "requests failed: {:?}", count.failures);
    assert_eq!(version_of(ip).as_deref(), Some("v1"));
    assert_eq!(r.outputs["release-version"], "4", "{:?}", r.outputs);
    let history = bed.aws_json(&["ssm", "get-parameter-history", "--name", &format!("/ec2-deploy/test/{repo}")]);
    let last: serde_json::Value = serde_json::from_str(history["Parameters"][3]["Value"].as_str().unwrap()).unwrap();
    assert_eq!((last["tag"].as_str(), last["rolled_back_from"].as_i64()), (Some("v1"), Some(3)));

    // A version the record does not have: refused by the plan, exit 2, v1 still serving.
    let mut i = inputs(&bed, &repo, &suite, "ignored", "VERSION=ignored");
    set(&mut i, "rollback-to", "9");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(
        r.stderr.contains("has no version 9 (its versions: 1, 2, 3, 4)")
            || r.stdout.contains("has no version 9 (its versions: 1, 2, 3, 4)"),
        "{}",
        r.log()
    );
    assert_eq!(version_of(ip).as_deref(), Some("v1"));
}

/// A proxy image that cannot serve (here the demo app's image: it has no Caddy, and its app
/// listens on another port than the proxy's) with a new
/// release: the release is undone and the proxy that served before serves again before the
/// script exits; the run fails and says so. Before, the old proxy was removed first and the port
/// answered nothing after such a run.
#[test]
fn a_proxy_image_that_cannot_start_leaves_the_proxy_that_served_serving() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("badproxy");
    bed.create_repository(&repo);
    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    let ip = &web.ips[0];
    assert_eq!(version_of(ip).as_deref(), Some("v1"));

    let mut i = inputs(&bed, &repo, &suite, "v2", "VERSION=v2");
    set(&mut i, "proxy-image", &r1.outputs["image"]);
    let r2 = run_with(&bed, i);
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert_eq!(version_of(ip).as_deref(), Some("v1"), "the port does not answer v1 after the run");
    assert!(r2.log().contains("the proxy that served before serves again"), "{}", r2.log());
    let proxies: Vec<String> =
        names(&bed, &web.ids[0]).into_iter().filter(|n| n.starts_with("ec2-deploy-proxy-")).collect();
    assert_eq!(proxies.len(), 1, "{proxies:?}");
    assert!(!proxies[0].contains("-old "), "{proxies:?}");
}

/// From a proxied release to one without the proxy (`proxy: false`), and back when it fails.
/// A release that fails its health check on the one instance: what served before (the proxy and
/// the release behind it) serves again — the proxy, stopped for the new container's own port,
/// was left stopped and the port dark. A release that fails on another instance: the instance
/// that switched goes back to the proxied release with that release's proxy (the rollback was
/// rendered without one, exit 14).
#[test]
fn leaving_the_proxy_in_a_release_that_fails_puts_the_proxy_and_its_release_back() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("unproxy");
    bed.create_repository(&repo);
    let proxied =
        |bed: &Bed, id: &str| names(bed, id).iter().any(|l| l.starts_with(&format!("ec2-deploy-proxy-{repo} ")));
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    let direct = |tag: &str, args: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, args);
        set(&mut i, "proxy", "false");
        set(&mut i, "health-check-timeout", "5");
        set(&mut i, "max-concurrency", "100%");
        i
    };

    // Unhealthy everywhere: each instance undoes its own swap.
    let r = run_with(&bed, direct("v2", "VERSION=v2\nHEALTH=fail"));
    assert_eq!(r.code, 1, "{}", r.log());
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{id} after the undo: {}", r.summary);
        assert!(proxied(&bed, id), "{id}: the proxy is not running: {:?}", names(&bed, id));
    }

    // Healthy on the first instance, not on the second (cut off from the dependency v3 checks):
    // the first, switched to v3 without the proxy, goes back to v1 behind the proxy.
    let dependency = super::rolling::dependency(&bed);
    super::rolling::cut_off(&bed, &web.ids[1], &dependency);
    let r = run_with(&bed, direct("v3", &format!("VERSION=v3\nHEALTH=tcp:{dependency}")));
    assert_eq!(r.code, 1, "{}", r.log());
    assert!(!r.summary.contains("rollback failed"), "{}", r.summary);
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v1"), "{}", r.summary);
    assert!(proxied(&bed, &web.ids[0]), "{:?}", names(&bed, &web.ids[0]));
}

/// A port the container publishes itself (here 9090, beside the proxied 3000) stops with the
/// previous container, before the new one starts: during its start and health check nothing is
/// behind the proxy. A slow starter (15 s here, as a large app boots) must not turn that into
/// 502s: the proxy holds the requests to port 3000 until the new container takes them. Patient
/// clients (curl, 60 s), as a browser waits; the bed's load client gives up after 5 s.
#[test]
fn a_release_with_a_port_of_its_own_drops_no_request_to_the_proxied_port() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let repo = unique("direct");
    bed.create_repository(&repo);
    let with_direct = |tag: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "ports", "3000:3000\n9090:9090");
        set(&mut i, "health-check-timeout", "30");
        i
    };
    let r1 = run_with(&bed, with_direct("v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    assert!(r1.stdout.contains("port 3000 holds its requests meanwhile, up to 45s"), "{}", r1.stdout);

    let mut v2 = with_direct("v2");
    set(&mut v2, "env", "DEMO_HEALTH=delay:15");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("http://{ip}:3000/version");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let mut answers = vec![];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = std::process::Command::new("curl")
                        .args(["-s", "--max-time", "60", "-w", " %{http_code}", &url])
                        .output()
                        .unwrap();
                    answers.push(String::from_utf8_lossy(&out.stdout).replace('\n', "").trim().to_string());
                    std::thread::sleep(Duration::from_millis(200));
                }
                answers
            })
        })
        .collect();
    let r2 = run_with(&bed, v2);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(r2.code, 0, "{}", r2.log());
    let failed: Vec<&String> = answers.iter().filter(|a| !a.ends_with(" 200")).collect();
    println!("v2 with a port of its own: {} requests, {} failed: {failed:?}", answers.len(), failed.len());
    assert!(failed.is_empty(), "requests to the proxied port failed: {failed:?}");
    assert!(answers.iter().any(|a| a == "v1 200") && answers.iter().any(|a| a == "v2 200"), "{answers:?}");
    let ps = names(&bed, id);
    assert!(ps.iter().any(|n| n.starts_with(&format!("{repo} ")) && n.contains(":9090->9090")), "{ps:?}");
}
