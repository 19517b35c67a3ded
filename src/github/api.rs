//! GitHub's REST API through octocrab: Deployments and their statuses, and the compare API for
//! the run-order guard. (The runner's workflow commands are [`crate::github::runner`].)
//!
//! octocrab has no typed Deployments API, so its generic `post` / `get` are used on
//! `/repos/{owner}/{repo}/deployments…`. The base URL is `GITHUB_API_URL` (GitHub Enterprise
//! ends it in `/api/v3`). GitHub is a reporting channel here: every failure becomes a notice for
//! the caller to print, never a failed deploy.

use http::header::{HeaderName, ACCEPT};
use serde_json::{json, Value};

use crate::model::EnvironmentName;
use crate::ports::{Comparison, DeploymentState, GitHub, GitHubError};

pub struct GitHubApi {
    client: octocrab::Octocrab,
    /// `owner/repo`
    pub repository: String,
}

fn describe(e: octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => format!("{} ({})", source.message, source.status_code),
        other => {
            let text = other.to_string();
            // octocrab's errors can be long; the first line says enough.
            text.lines().next().unwrap_or_default().to_string()
        }
    }
}

impl GitHubApi {
    /// `None` when there is no token or no repository to talk about.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        token: Option<&str>,
    ) -> Result<Option<GitHubApi>, GitHubError> {
        let (Some(token), Some(repository)) =
            (token.filter(|t| !t.is_empty()), env("GITHUB_REPOSITORY").filter(|r| r.contains('/')))
        else {
            return Ok(None);
        };
        let base = env("GITHUB_API_URL").filter(|u| !u.is_empty()).unwrap_or_else(|| "https://api.github.com".into());
        let client = octocrab::Octocrab::builder()
            .base_uri(base.as_str())
            .map_err(|e| GitHubError { what: format!("GITHUB_API_URL {base:?}"), message: describe(e) })?
            .personal_token(token.to_string())
            .add_header(ACCEPT, "application/vnd.github+json".into())
            .add_header(HeaderName::from_static("x-github-api-version"), "2022-11-28".into())
            .build()
            .map_err(|e| GitHubError { what: "setting up the GitHub client".into(), message: describe(e) })?;
        Ok(Some(GitHubApi { client, repository }))
    }
}

impl GitHub for GitHubApi {
    /// Creates a deployment of `sha` to `environment`; returns its id.
    async fn create_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        description: &str,
        payload: Value,
    ) -> Result<u64, GitHubError> {
        let body = json!({
            "ref": sha,
            "environment": environment.as_str(),
            "description": description,
            "payload": payload,
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": false,
        });
        let route = format!("/repos/{}/deployments", self.repository);
        let answer: Value = self.client.post(route, Some(&body)).await.map_err(|e| GitHubError {
            what: format!("creating a deployment in {}", self.repository),
            message: describe(e),
        })?;
        answer["id"].as_u64().ok_or_else(|| GitHubError {
            what: "creating a deployment".into(),
            message: format!(
                "GitHub answered without an id: {}",
                answer.to_string().chars().take(200).collect::<String>()
            ),
        })
    }

    async fn set_deployment_status(
        &self,
        deployment: u64,
        state: DeploymentState,
        description: &str,
        log_url: Option<&str>,
        environment_url: Option<&str>,
    ) -> Result<(), GitHubError> {
        let mut body =
            json!({ "state": state.as_str(), "description": description.chars().take(140).collect::<String>() });
        if let Some(url) = log_url {
            body["log_url"] = json!(url);
        }
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        if state != DeploymentState::InProgress {
            body["auto_inactive"] = json!(true);
        }
        let route = format!("/repos/{}/deployments/{deployment}/statuses", self.repository);
        let _: Value = self.client.post(route, Some(&body)).await.map_err(|e| GitHubError {
            what: format!("setting deployment {deployment} to {}", state.as_str()),
            message: describe(e),
        })?;
        Ok(())
    }

    async fn find_job_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        run_url: &str,
    ) -> Result<Option<u64>, GitHubError> {
        let what = || format!("looking for the job's deployment to {environment}");
        let route = format!("/repos/{}/deployments", self.repository);
        let query = json!({ "sha": sha, "environment": environment.as_str(), "per_page": 10 });
        let deployments: Vec<Value> = self
            .client
            .get(route, Some(&query))
            .await
            .map_err(|e| GitHubError { what: what(), message: describe(e) })?;
        // Newest first; the job's deployment links its statuses to the run (…/runs/<id>/job/<id>).
        let links_to_run = |url: Option<&str>| {
            url.is_some_and(|u| u == run_url || u.strip_prefix(run_url).is_some_and(|rest| rest.starts_with('/')))
        };
        for deployment in deployments {
            let Some(id) = deployment["id"].as_u64() else { continue };
            let route = format!("/repos/{}/deployments/{id}/statuses", self.repository);
            let statuses: Vec<Value> = self
                .client
                .get(route, Some(&json!({ "per_page": 10 })))
                .await
                .map_err(|e| GitHubError { what: what(), message: describe(e) })?;
            if statuses.iter().any(|s| links_to_run(s["log_url"].as_str()) || links_to_run(s["target_url"].as_str())) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// How `head` relates to `base`.
    async fn compare(&self, base: &str, head: &str) -> Result<Comparison, GitHubError> {
        let route = format!("/repos/{}/compare/{base}...{head}", self.repository);
        let answer: Value = self
            .client
            .get(route, None::<&()>)
            .await
            .map_err(|e| GitHubError { what: format!("comparing {base}...{head}"), message: describe(e) })?;
        answer["status"]
            .as_str()
            .map(|s| match s {
                "ahead" => Comparison::Ahead,
                "behind" => Comparison::Behind,
                "identical" => Comparison::Identical,
                "diverged" => Comparison::Diverged,
                other => Comparison::Other(other.to_string()),
            })
            .ok_or_else(|| GitHubError {
                what: format!("comparing {base}...{head}"),
                message: "GitHub answered without a status".into(),
            })
    }
}
