//! Build and push the image with the Docker CLI and BuildKit: the
//! [`ImageBuilder`](crate::ports::ImageBuilder) port.
//!
//! The layer cache comes from the registry: the build embeds its cache metadata in the image
//! (`BUILDKIT_INLINE_CACHE=1`) and the next build reads it back with `--cache-from`, which works
//! with the plain docker driver GitHub's runners have and needs no cache storage on the runner.
//!
//! The CLI is `docker` on PATH, or `EC2_DEPLOY_DOCKER`. It runs with a private `DOCKER_CONFIG`
//! that lives as long as the run, so registry credentials never outlive it. Build-argument values
//! reach docker through its environment (`--build-arg NAME` without a value), not its arguments.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::model::{Digest, Secret, SecretSource};
use crate::ports::{BuildError, BuildSpec};

pub struct Docker {
    program: OsString,
    config_dir: tempfile::TempDir,
}

impl Docker {
    pub fn new(lookup: impl Fn(&str) -> Option<String>) -> Result<Docker, BuildError> {
        let program = lookup("EC2_DEPLOY_DOCKER").filter(|p| !p.is_empty()).unwrap_or_else(|| "docker".into());
        let config_dir = tempfile::Builder::new().prefix("ec2-deploy-docker-").tempdir().map_err(|e| BuildError {
            step: "docker",
            message: format!("cannot create a private DOCKER_CONFIG: {e}"),
        })?;
        Ok(Docker { program: program.into(), config_dir })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.env("DOCKER_CONFIG", self.config_dir.path()).env("DOCKER_BUILDKIT", "1").kill_on_drop(true);
        c
    }

    async fn run(&self, step: &'static str, mut cmd: Command, stdin: Option<&str>) -> Result<String, BuildError> {
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| BuildError {
            step,
            message: format!(
                "cannot run {}: {e} (set EC2_DEPLOY_DOCKER to the docker CLI)",
                self.program.to_string_lossy()
            ),
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.map_err(|e| BuildError { step, message: e.to_string() })?;
        }
        let out = child.wait_with_output().await.map_err(|e| BuildError { step, message: e.to_string() })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(BuildError {
                step,
                message: format!("docker exited with {} (its output is above)", out.status),
            });
        }
        Ok(stdout)
    }

    pub async fn login(&self, host: &str, username: &str, password: &Secret) -> Result<(), BuildError> {
        let mut cmd = self.command();
        cmd.args(["login", "--username", username, "--password-stdin", host]);
        self.run("registry login", cmd, Some(&password.0)).await.map(|_| ())
    }

    /// `docker build` of `spec` (paths relative to `workdir`) tagged `image`, of the stage
    /// `target`, with the layer caches of the images `cache_from` (those the registry does not
    /// have yet are passed over by BuildKit).
    pub async fn build(
        &self,
        spec: &BuildSpec,
        workdir: &Path,
        image: &str,
        cache_from: &[&str],
        target: Option<&str>,
    ) -> Result<(), BuildError> {
        let context = workdir.join(&spec.context);
        if !context.is_dir() {
            return Err(BuildError {
                step: "build",
                message: format!("the build context {} is not a directory (input `context`)", spec.context.display()),
            });
        }
        let mut cmd = self.command();
        cmd.current_dir(workdir);
        cmd.args(["build", "--tag", image, "--build-arg", "BUILDKIT_INLINE_CACHE=1"]);
        for cache in cache_from {
            cmd.args(["--cache-from", cache]);
        }
        if let Some(dockerfile) = &spec.dockerfile {
            cmd.arg("--file").arg(workdir.join(dockerfile));
        }
        if let Some(target) = target {
            cmd.args(["--target", target]);
        }
        if let Some(platform) = &spec.platform {
            cmd.args(["--platform", platform.as_str()]);
        }
        // Secrets reach BuildKit as files: a variable's value goes into a file only this user can
        // read, in a directory removed when the build ends. The command line names ids and paths.
        let secrets_dir = if spec.secrets.is_empty() {
            None
        } else {
            Some(tempfile::Builder::new().prefix("ec2-deploy-secrets").tempdir().map_err(|e| BuildError {
                step: "build",
                message: format!("a private directory for the build secrets: {e}"),
            })?)
        };
        for secret in &spec.secrets {
            let path = match &secret.source {
                SecretSource::File { path } => workdir.join(path),
                SecretSource::Env { value, .. } => {
                    let dir = secrets_dir.as_ref().expect("made above when there are secrets");
                    let path = dir.path().join(&secret.id);
                    write_private(&path, value.0.as_bytes()).map_err(|e| BuildError {
                        step: "build",
                        message: format!("writing build secret {}: {e}", secret.id),
                    })?;
                    path
                }
            };
            cmd.arg("--secret").arg(format!("id={},src={}", secret.id, path.display()));
        }
        for arg in &spec.args {
            cmd.args(["--build-arg", &arg.name]).env(&arg.name, &arg.value);
        }
        cmd.arg(&context);
        // Build output is for the log, not for us.
        cmd.stdout(Stdio::inherit());
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::inherit()).spawn().map_err(|e| BuildError {
            step: "build",
            message: format!(
                "cannot run {}: {e} (set EC2_DEPLOY_DOCKER to the docker CLI)",
                self.program.to_string_lossy()
            ),
        })?;
        let status = child.wait().await.map_err(|e| BuildError { step: "build", message: e.to_string() })?;
        if !status.success() {
            return Err(BuildError {
                step: "build",
                message: format!("docker build exited with {status} (its output is above)"),
            });
        }
        Ok(())
    }

    /// Pushes `image` without its progress in the log.
    pub async fn push_quietly(&self, image: &str) -> Result<(), BuildError> {
        let mut cmd = self.command();
        cmd.args(["push", "--quiet", image]);
        self.run("push", cmd, None).await.map(|_| ())
    }

    /// Pushes `image` and returns the digest the registry stored it under.
    pub async fn push(&self, image: &str) -> Result<Digest, BuildError> {
        let mut cmd = self.command();
        cmd.args(["push", image]);
        let out = self.run("push", cmd, None).await?;
        print!("{out}");
        let mut cmd = self.command();
        cmd.args(["image", "inspect", "--format", "{{json .RepoDigests}}", image]);
        let json = self.run("push", cmd, None).await?;
        let digests: Vec<String> = serde_json::from_str(json.trim()).unwrap_or_default();
        let repo = image.rsplit_once(':').map(|(r, t)| if t.contains('/') { image } else { r }).unwrap_or(image);
        digests
            .iter()
            .find_map(|d| d.strip_prefix(repo).and_then(|rest| rest.strip_prefix('@')))
            .and_then(|d| Digest::parse(d).ok())
            .ok_or_else(|| BuildError {
                step: "push",
                message: format!("docker reported no digest for {image} after the push"),
            })
    }
}

impl Docker {
    /// Whether the CLI answers these arguments (quietly).
    async fn answers(&self, args: &[&str]) -> bool {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        matches!(cmd.status().await, Ok(s) if s.success())
    }

    /// Copies `from` to `to`: every platform with `docker buildx imagetools create` when buildx is
    /// there (the action's image has it), else the runner's platform by pull, tag and push.
    pub async fn copy(&self, from: &str, to: &str) -> Result<Digest, BuildError> {
        if self.answers(&["buildx", "version"]).await
            && self.answers(&["buildx", "imagetools", "create", "--tag", to, from]).await
        {
            let mut cmd = self.command();
            cmd.args(["buildx", "imagetools", "inspect", to, "--format", "{{json .Manifest}}"]);
            let json = self.run("copy", cmd, None).await?;
            let manifest: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
            if let Some(digest) = manifest["digest"].as_str().and_then(|d| Digest::parse(d).ok()) {
                return Ok(digest);
            }
        }
        let mut cmd = self.command();
        cmd.args(["pull", "--quiet", from]);
        self.run("copy (pull)", cmd, None).await?;
        let mut cmd = self.command();
        cmd.args(["tag", from, to]);
        self.run("copy (tag)", cmd, None).await?;
        self.push(to).await
    }
}

/// Creates `path` readable by its owner only, with `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_part_of_a_tagged_reference_keeps_the_registry_port() {
        let image = "10.0.0.1:5000/team/app:v1";
        let repo = image.rsplit_once(':').map(|(r, t)| if t.contains('/') { image } else { r }).unwrap();
        assert_eq!(repo, "10.0.0.1:5000/team/app");
    }
}
