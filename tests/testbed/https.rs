//! HTTPS on the instance without a load balancer: the proxy gets its certificate from a real ACME
//! server, Debian's `pebble` (Let's Encrypt's RFC 8555 test CA), which validates the challenge by
//! connecting to the instance as Let's Encrypt would. Its DNS is `pebble-challtestsrv`, answering
//! every name with the instance's address. Each test starts its own pair, on free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::support::{unique, wait_until, Bed};
use super::{inputs, run_with, set};

/// The bed's host as the instances reach it (AWS_ENDPOINT_URL's address).
const HOST: &str = "10.77.0.1";

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// pebble and its DNS, stopped on drop.
struct Acme {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    directory: String,
    management: String,
}

impl Acme {
    fn start(answer_with: &str) -> Acme {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // pebble's own TLS certificate (its directory is HTTPS only): self-signed for the address
        // the instances dial; the proxy is given it as the CA's root.
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=pebble", "-addext", &format!("subjectAltName=IP:{HOST}")])
            .arg("-keyout")
            .arg(path("key.pem"))
            .arg("-out")
            .arg(path("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl could not make pebble's certificate");
        let (listen, manage, dns) = (free_port(HOST), free_port("127.0.0.1"), free_port("127.0.0.1"));
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("{HOST}:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{manage}"),
            "certificate": path("cert.pem"), "privateKey": path("key.pem"),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        std::fs::write(path("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(path(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", answer_with, "-defaultIPv6", "", "-dns01", &format!("127.0.0.1:{dns}")])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port("127.0.0.1")),
            ])
            .stdout(log("dns.log"))
            .stderr(log("dns.err"))
            .spawn()
            .expect("pebble-challtestsrv (Debian's pebble package: scripts/testbed up installs it)");
        // No random sleep before validating, no nonce rejected at random: a test of the proxy,
        // not of a client's retries.
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble");
        let acme = Acme {
            directory: format!("https://{HOST}:{listen}/dir"),
            management: format!("https://127.0.0.1:{manage}"),
            children: vec![dns_server, pebble],
            dir,
        };
        wait_until("pebble's directory", Duration::from_secs(20), || curl(&["-k", &acme.directory]).is_some());
        acme
    }

    fn own_certificate(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cert.pem")).unwrap()
    }

    /// The root pebble signs certificates with (made at its start), as a file for curl.
    fn issuing_root(&self) -> PathBuf {
        let root = curl(&["-k", &format!("{}/roots/0", self.management)]).expect("pebble's management API");
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, root).unwrap();
        path
    }

    fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "--max-time", "5"]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GET https://HOST/PATH from the instance at IP, trusting only `root`.
fn https_get(host: &str, ip: &str, root: &Path, path: &str) -> Option<String> {
    curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--resolve",
        &format!("{host}:443:{ip}"),
        &format!("https://{host}{path}"),
    ])
}

/// The SHA-256 fingerprint of the certificate the instance serves for `host`.
fn served_fingerprint(host: &str, ip: &str) -> String {
    let script = format!(
        "openssl s_client -connect {ip}:443 -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn https_on_the_instance_gets_a_certificate_from_the_acme_ca_keeps_it_and_drops_no_request() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let acme = Acme::start(ip);
    let host = format!("app-{}.example.test", suite.to_lowercase());
    let repo = unique("https");
    bed.create_repository(&repo);
    let deploy = |tag: &str, extra: &[(&str, &str)]| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "ports", "80:3000");
        set(&mut i, "proxy-hosts", &host);
        set(&mut i, "proxy-acme-ca", &acme.directory);
        set(&mut i, "proxy-acme-ca-root", &acme.own_certificate());
        set(&mut i, "proxy-acme-email", "ops@example.test");
        for (k, v) in extra {
            set(&mut i, k, v);
        }
        run_with(&bed, i)
    };

    let r1 = deploy("v1", &[]);
    assert_eq!(r1.code, 0, "{}\npebble: {}", r1.log(), acme.log());
    let (_, invocations) = bed.commands_and_outputs(&r1.outputs["command-id"]);
    assert!(
        invocations.contains(&format!("HTTPS: {host} served with a certificate from {}", acme.directory)),
        "{invocations}"
    );
    assert!(
        r1.stdout.contains(&format!("HTTPS for {host} on port 443 with certificates from {}", acme.directory)),
        "the plan: {}",
        r1.stdout
    );
    let root = acme.issuing_root();
    assert_eq!(https_get(&host, ip, &root, "/version").as_deref().map(str::trim), Some("v1"), "{}", acme.log());
    // Plain HTTP on the proxied port redirects to HTTPS.
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        &format!("Host: {host}"),
        &format!("http://{ip}/version"),
    ]);
    assert_eq!(redirect.as_deref(), Some(format!("308 https://{host}/version").as_str()));
    let first = served_fingerprint(&host, ip);
    assert!(first.contains("Fingerprint="), "{first}");

    // v2 under steady HTTPS load (new TLS connections, each request): none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, host, ip, root) = (stop.clone(), host.clone(), ip.clone(), root.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed, started) = (0u32, Vec::new(), Instant::now());
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                    match https_get(&host, &ip, &root, "/version") {
                        Some(body) if body.trim().starts_with('v') => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (ok, failed)
            })
        })
        .collect();
    let r2 = deploy("v2", &[]);
    stop.store(true, Ordering::SeqCst);
    let (ok, failed): (u32, Vec<String>) =
        clients.into_iter().map(|c| c.join().unwrap()).fold((0, vec![]), |mut a, (o, f)| {
            a.0 += o;
            a.1.extend(f);
            a
        });
    assert_eq!(r2.code, 0, "{}", r2.log());
    println!("HTTPS during v2: {} requests, {} failed", ok as usize + failed.len(), failed.len());
    assert!(failed.is_empty(), "HTTPS requests failed during the deploy: {:?}", &failed[..failed.len().min(5)]);
    assert!(ok >= 20, "only {ok} requests during the deploy");
    assert_eq!(https_get(&host, ip, &root, "/version").as_deref().map(str::trim), Some("v2"));

    // A change that replaces the proxy (here, its trusted hops) keeps the certificate: it lives
    // in the volume, not in the proxy's container. The same certificate is served after it.
    let r3 = deploy("v3", &[("proxy-trusted", "none")]);
    assert_eq!(r3.code, 0, "{}", r3.log());
    assert_eq!(https_get(&host, ip, &root, "/version").as_deref().map(str::trim), Some("v3"));
    assert_eq!(served_fingerprint(&host, ip), first, "a new certificate after the proxy was replaced");
    let volumes = bed.on_instance(id, &["docker", "volume", "ls", "--format", "{{.Name}}"]);
    assert!(String::from_utf8_lossy(&volumes.stdout).contains(&format!("ec2-deploy-proxy-{repo}-data")), "{volumes:?}");
}
