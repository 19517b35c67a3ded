//! `build: true` on a multi-stage Dockerfile: every stage the image copies from is cached in the
//! registry, so a build on a machine that has never built the image (a new hosted runner) runs
//! only what changed — and a build secret is in none of the cached images.

use super::options::file_in_container;
use super::support::{unique, ActionRun, Bed};
use super::{inputs, set};

/// A dependencies stage (with a build secret and a step whose result differs every time it
/// runs), a build stage from it that takes the source, and a runtime stage that copies only the
/// result: the inline cache of the image holds the runtime stage alone.
fn dockerfile(run: &str) -> String {
    format!(
        "FROM scratch AS deps\nCOPY demo-app /demo-app\nENV EC2_DEPLOY_TEST_RUN={run}\n\
         RUN --mount=type=secret,id=token [\"/demo-app\", \"--length-of\", \"/run/secrets/token\", \"/token-length\"]\n\
         RUN [\"/demo-app\", \"--stamp\", \"/deps-built-at\"]\n\
         FROM deps AS build\nCOPY app.txt /app.txt\nRUN [\"/demo-app\", \"--stamp\", \"/built-at\"]\n\
         FROM scratch AS runtime\nCOPY --from=build /deps-built-at /app.txt /token-length /\n\
         COPY demo-app /demo-app\nENV DEMO_VERSION=v1 PORT=3000\nENTRYPOINT [\"/demo-app\"]\n"
    )
}

/// The Docker engine of a bed instance that only builds: empty when it starts (no image, no
/// build cache), as a new hosted runner is.
fn engine(bed: &Bed, id: &str) -> String {
    format!("unix://{}/instances/{id}/docker.sock", bed.get("TESTBED_STATE"))
}

fn docker_on(bed: &Bed, host: &str, args: &[&str]) -> Vec<u8> {
    let out =
        std::process::Command::new(bed.get("TESTBED_DOCKER")).env("DOCKER_HOST", host).args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A cold build on an empty engine, then a one-line change of the source built on it once it is
/// emptied again (no image, no build cache, as a new runner): the second build takes the
/// dependencies stage from the registry (its step's stamp is the first build's) and builds the rest anew; the stage's image is in the repository and holds
/// neither build's secret value.
#[test]
fn a_multi_stage_build_on_a_new_machine_runs_only_what_changed_and_caches_no_secret() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let builders = bed.fleet_in(&suite, 1, &["Role=builder"]); // held: dropped, it is removed
    let builder = engine(&bed, &builders.ids[0]);
    let repo = unique("stages");
    bed.create_repository(&repo);
    let secrets = [unique("npm-token-cold-q7"), unique("npm-token-warm-k2")];

    let mut results = vec![];
    for (n, (tag, source)) in [("v1", "cold"), ("v2", "warm")].into_iter().enumerate() {
        let mut i = inputs(&bed, &repo, &suite, tag, "");
        i.retain(|(k, _)| k != "target"); // the last stage
        set(&mut i, "file", "Dockerfile.stages");
        set(&mut i, "build-secrets", "id=token,env=NPM_TOKEN");
        let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut action = ActionRun::new(&borrowed);
        std::fs::write(action.workspace.join("Dockerfile.stages"), dockerfile(&repo)).unwrap();
        std::fs::write(action.workspace.join("app.txt"), source).unwrap(); // the one-line change
        if n > 0 {
            // A new machine: no image, no build cache (only the registry can supply a cache).
            docker_on(&bed, &builder, &["system", "prune", "--all", "--force"]);
            docker_on(&bed, &builder, &["builder", "prune", "--all", "--force"]);
            let left = String::from_utf8(docker_on(&bed, &builder, &["image", "ls", "--quiet"])).unwrap();
            assert_eq!(left.trim(), "", "images left on the builder");
        }
        action.env = vec![("NPM_TOKEN".into(), secrets[n].clone()), ("DOCKER_HOST".into(), builder.clone())];
        let r = action.run(&bed);
        assert_eq!(r.code, 0, "{}", r.log());
        assert!(
            r.stdout
                .contains("stage build copied from: built and pushed as :ec2-deploy-cache-build (their layer cache)"),
            "{}",
            r.stdout
        );
        let file = |path| file_in_container(&bed, &web.ids[0], &repo, path);
        results.push((file("/app.txt"), file("/deps-built-at"), r));
    }
    let ((cold_source, cold_deps, _), (warm_source, warm_deps, warm)) = (&results[0], &results[1]);
    assert_eq!((cold_source.as_str(), warm_source.as_str()), ("cold", "warm"), "the change was built");
    assert_eq!(warm_deps, cold_deps, "the dependencies stage ran again on the emptied engine");
    // The image's own layer cache is the last release, not the stage's image pushed after it.
    assert!(warm.stdout.contains(&format!("/{repo}:v1)")), "{}", warm.stdout);

    // The stage's image is in the repository, and no secret value is in it: not in its layers,
    // its history or its config (its inline cache metadata included).
    let tags = bed.aws(&[
        "ecr",
        "describe-images",
        "--repository-name",
        &repo,
        "--query",
        "imageDetails[].imageTags[]",
        "--output",
        "text",
    ]);
    assert!(tags.split_whitespace().any(|t| t == "ec2-deploy-cache-build"), "{tags}");
    let cache = format!("{}/{repo}:ec2-deploy-cache-build", bed.get("TESTBED_REGISTRY"));
    let saved = docker_on(&bed, &builder, &["image", "save", &cache]);
    let history = String::from_utf8(docker_on(&bed, &builder, &["history", "--no-trunc", &cache])).unwrap();
    assert!(history.contains("--stamp"), "{history}");
    let saved_text = String::from_utf8_lossy(&saved);
    // The runner's own mask command carries the value (and hides it from the log): not a leak.
    let log: Vec<&str> = warm.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect();
    for value in &secrets {
        assert!(!saved_text.contains(value.as_str()), "a build secret value is in the stage's cached image");
        assert!(!history.contains(value.as_str()), "a build secret value is in the stage image's history");
        assert!(!log.iter().any(|l| l.contains(value.as_str())) && !warm.stderr.contains(value.as_str()), "in the log");
    }
}
