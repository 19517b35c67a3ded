//! Build secrets: values a Dockerfile reads with `RUN --mount=type=secret,id=…`, from the job's
//! environment or a file of the workspace. They reach BuildKit as a file only the build reads,
//! never as a build argument, a command-line word, a layer or a line of the log.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::container::is_env_name;
use super::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SecretSource {
    /// An environment variable of the job (the step's `env:`); its value, read when the inputs
    /// are, is never serialised.
    Env {
        name: String,
        #[serde(skip)]
        value: Secret,
    },
    /// A file of the workspace, relative to it.
    File { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildSecret {
    pub id: String,
    pub source: SecretSource,
}

impl BuildSecret {
    /// `id=npmrc,env=NPM_TOKEN` or `id=npmrc,src=.npmrc`; `env` looks the variable up (it must be
    /// set and not empty).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<BuildSecret, String> {
        let mut id = None;
        let mut source = None;
        for part in text.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("expected id=ID,env=VARIABLE or id=ID,src=PATH, got {:?}", super::excerpt(text, 60))
            })?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "id" if id.is_none() => id = Some(value.to_string()),
                "env" | "src" if source.is_none() => source = Some((key, value.to_string())),
                _ => {
                    return Err(format!(
                        "{key:?} is not expected here (or comes twice): use id= and one of env= or src="
                    ))
                }
            }
        }
        let id = id.ok_or("needs id=: the id the Dockerfile mounts it by (RUN --mount=type=secret,id=…)")?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(format!("id {id:?}: letters, digits, _ - and . only"));
        }
        let source = match source.ok_or("needs env=VARIABLE or src=PATH: where the value comes from")? {
            ("env", name) => {
                if !is_env_name(&name) {
                    return Err(format!("env {name:?} is not a variable name"));
                }
                let value = env(&name).filter(|v| !v.is_empty()).ok_or_else(|| {
                    format!("env {name} is not set for this step: pass it with the step's env: (e.g. {name}: ${{{{ secrets.{name} }}}})")
                })?;
                SecretSource::Env { name, value: Secret(value) }
            }
            (_, path) => {
                if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    return Err(format!("src {path:?}: a path inside the workspace, relative to it"));
                }
                SecretSource::File { path: PathBuf::from(path) }
            }
        };
        Ok(BuildSecret { id, source })
    }
}

impl fmt::Display for BuildSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Env { name, .. } => write!(f, "{} (env {name})", self.id),
            SecretSource::File { path } => write!(f, "{} (file {})", self.id, path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_a_set_variable_or_a_workspace_file() {
        let env = |n: &str| (n == "NPM_TOKEN").then(|| "t0ken".to_string());
        let s = BuildSecret::parse("id=npmrc,env=NPM_TOKEN", env).unwrap();
        assert_eq!(s.to_string(), "npmrc (env NPM_TOKEN)");
        assert!(!format!("{s:?}").contains("t0ken"), "the value shows in Debug");
        assert!(!serde_json::to_string(&s).unwrap().contains("t0ken"), "the value is serialised");
        assert_eq!(
            BuildSecret::parse("id=cfg, src=config/build.env", env).unwrap().to_string(),
            "cfg (file config/build.env)"
        );
        for (bad, says) in [
            ("id=npmrc,env=MISSING", "is not set for this step"),
            ("id=npmrc", "needs env=VARIABLE or src=PATH"),
            ("env=NPM_TOKEN", "needs id="),
            ("id=a b,env=NPM_TOKEN", "letters, digits"),
            ("id=x,src=/etc/passwd", "inside the workspace"),
            ("id=x,src=../x", "inside the workspace"),
            ("id=x,env=NPM_TOKEN,src=y", "comes twice"),
            ("npmrc", "expected id=ID"),
        ] {
            let err = BuildSecret::parse(bad, env).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
