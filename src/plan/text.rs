//! The plan as the user reads it, in the log before anything moves (and as all a dry run prints).

use std::fmt;

use super::{ImageSource, Plan, ProxyPlan, ProxySource, Rollout};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = self.environment.as_ref().map(|e| e.as_str()).unwrap_or("(no environment)");
        let what = if self.converge.is_some() { "converge" } else { "deploy" };
        writeln!(f, "Plan: {what} {} to {env} in {}", self.image, self.region)?;
        self.image_lines(f)?;
        self.release_lines(f)?;
        self.container_lines(f)?;
        self.rollout_lines(f)?;
        self.instance_lines(f)?;
        if self.dry_run && self.converge.is_some() {
            writeln!(f, "Dry run: nothing was built, pushed or deployed (only the read-only check was sent).")?;
        } else if self.dry_run {
            writeln!(f, "Dry run: nothing was built, pushed or sent.")?;
        }
        Ok(())
    }
}

/// The plan's sections, in the order they are printed.
impl Plan {
    /// How the image is obtained.
    fn image_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            ImageSource::Build { cache_from, spec } => {
                writeln!(
                    f,
                    "  image      build{} and push{}",
                    spec.platform.as_ref().map(|p| format!(" for {p}")).unwrap_or_default(),
                    cache_from
                        .as_ref()
                        .map(|c| format!(" (layer cache from {c})"))
                        .unwrap_or_else(|| " (no earlier image to take a layer cache from)".into())
                )?;
                let stages = &spec.stage_cache.stages;
                if !stages.is_empty() {
                    let tags: Vec<String> = stages.iter().map(|s| format!(":{}", super::cache_tag(s))).collect();
                    writeln!(
                        f,
                        "             stage{} {} copied from: built and pushed as {} (their layer cache)",
                        if stages.len() == 1 { "" } else { "s" },
                        stages.join(", "),
                        tags.join(", ")
                    )?;
                }
                for note in &spec.stage_cache.notes {
                    writeln!(f, "             layer cache: {note}")?;
                }
                if !spec.secrets.is_empty() {
                    let ids: Vec<String> = spec.secrets.iter().map(ToString::to_string).collect();
                    writeln!(f, "             build secrets: {}", ids.join(", "))?;
                }
            }
            ImageSource::Existing { digest } => {
                writeln!(f, "  image      already in the registry as {digest}: nothing to build")?
            }
        }
        Ok(())
    }

    /// The release record (and the rollback or converge), and the lock.
    fn release_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = &self.record;
        if let Some(to) = &record.rollback_to {
            writeln!(
                f,
                "  rollback   to version {} of the release record: {} (deployed {}); version {} is marked as rolled back from",
                to.version,
                to.release.tag,
                to.release.deployed_at,
                record.live.as_ref().map(|l| l.version).unwrap_or(0)
            )?;
        }
        match &record.live {
            Some(live) => writeln!(
                f,
                "  release    live: version {} of {} ({}, deployed {})",
                live.version, record.parameter, live.release.tag, live.release.deployed_at
            )?,
            None => writeln!(f, "  release    first release recorded in {}", record.parameter)?,
        }
        if let Some(c) = &self.converge {
            let drifted: Vec<_> = c.drifted().collect();
            writeln!(
                f,
                "  converge   {} of {} instance(s) run something else than the live release{}",
                drifted.len(),
                c.survey.len(),
                if drifted.is_empty() { ": nothing to do" } else { "; only they get it again:" }
            )?;
            for d in &drifted {
                writeln!(f, "    {}  {:<16} {}", d.instance.id, d.instance.name.as_deref().unwrap_or("-"), d.why())?;
            }
            let in_step: Vec<&str> = c.in_step().map(|i| i.id.as_str()).collect();
            if !in_step.is_empty() {
                writeln!(f, "             left alone (on the live release): {}", in_step.join(", "))?;
            }
        }
        match &self.lock {
            Some(lock) => writeln!(f, "  lock       held: {lock} (this plan was made under it)")?,
            None => writeln!(f, "  lock       none taken (dry run)")?,
        }
        Ok(())
    }

    /// The proxy's lines of the plan: the port it holds, its image, drains, HTTPS, direct ports.
    fn proxy_lines(&self, f: &mut fmt::Formatter<'_>, proxy: &ProxyPlan) -> fmt::Result {
        let c = &self.container;
        let image = match &proxy.source {
            ProxySource::Copy { from, to } => format!("{from}, copied into this repository as :{to}"),
            ProxySource::Existing { image } => format!("{image}, already in the registry"),
        };
        writeln!(
            f,
            "  proxy      Caddy holds port {} on each instance and moves it to the new container once healthy{}",
            proxy.port.host,
            if proxy.migration { "" } else { ": no request to it dropped" }
        )?;
        writeln!(f, "             image {image}")?;
        writeln!(
            f,
            "             connections open at the switch (WebSockets, streams, long requests) keep the previous container up to {}s (drain-timeout)",
            c.drain_timeout
        )?;
        if let Some(https) = &c.https {
            let hosts: Vec<&str> = https.hosts.iter().map(|h| h.as_str()).collect();
            writeln!(
                f,
                "             HTTPS for {} on port 443 with certificates from {} (the proxy obtains and renews them, kept on the instance across deploys); HTTP on port {} redirects to it",
                hosts.join(", "),
                https.ca,
                proxy.port.host
            )?;
        }
        if !proxy.direct.is_empty() {
            let direct: Vec<String> = proxy.direct.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "             {} published by the container itself: not zero-downtime there (stopped before the new one starts); port {} holds its requests meanwhile, up to {}s, instead of answering 502",
                direct.join(", "),
                proxy.port.host,
                c.health_check_timeout + 15
            )?;
        }
        if proxy.migration {
            writeln!(
                f,
                "             migration: the live release publishes port {} itself; on each instance, once the new container is healthy, it stops and the proxy takes the port (a short gap, measured and reported per instance)",
                proxy.port.host
            )?;
        }

        Ok(())
    }

    /// What runs on each instance: the container, the proxy, its settings, secret and health check.
    fn container_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.container;
        let ports = if c.ports.is_empty() {
            "none".to_string()
        } else {
            c.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        writeln!(f, "  container  {} (ports {ports})", c.name)?;
        match &self.proxy {
            Some(proxy) => self.proxy_lines(f, proxy)?,
            None if !c.ports.is_empty() => writeln!(
                f,
                "  proxy      none (proxy: false): the running container stops before the new one starts on its ports{}",
                if matches!(&self.rollout, Rollout::Batches { .. }) { "; each batch leaves the load balancer first" } else { ": requests to an instance fail while it swaps" }
            )?,
            None => {}
        }
        let env_names: Vec<&str> = c.env.iter().map(|e| e.name.as_str()).collect();
        writeln!(f, "  env        {}", if env_names.is_empty() { "none".to_string() } else { env_names.join(", ") })?;
        let o = &c.options;
        if !o.is_empty() {
            let mut parts = vec![];
            if !o.command.is_empty() {
                parts.push(format!(
                    "command {}",
                    shlex::try_join(o.command.iter().map(String::as_str)).unwrap_or_default()
                ));
            }
            parts.extend(o.volumes.iter().map(|v| format!("volume {v}")));
            parts.extend(o.memory.iter().map(|m| format!("memory {m}")));
            parts.extend(o.cpus.iter().map(|c| format!("cpus {c}")));
            if let Some(d) = &o.log_driver {
                // Keys only: a value may be a token (splunk-token) in spite of the advice.
                let opts: Vec<&str> = o.log_options.iter().map(|kv| kv.key.as_str()).collect();
                parts.push(format!(
                    "log {d}{}",
                    if opts.is_empty() { String::new() } else { format!(" ({})", opts.join(", ")) }
                ));
            }
            parts.extend(o.labels.iter().map(|l| format!("label {l}")));
            parts.extend(o.user.iter().map(|u| format!("user {u}")));
            writeln!(f, "  run        {}", parts.join("; "))?;
        }
        match (&c.secret_id, &self.secret_arn) {
            (Some(id), Some(arn)) => {
                writeln!(f, "  secret     {id} (found: {arn}); its keys become env vars, read on each instance")?
            }
            _ => writeln!(f, "  secret     none")?,
        }
        match (&c.health_check_path, c.health_port()) {
            (Some(path), Some(port)) => {
                writeln!(f, "  health     GET {path} on port {port} within {}s", c.health_check_timeout)?
            }
            _ => writeln!(
                f,
                "  health     the image's HEALTHCHECK if it has one, else running; within {}s",
                c.health_check_timeout
            )?,
        }
        Ok(())
    }

    /// How the instances are rolled through: batches, pre-deploy, alarms and the longest it can take.
    fn rollout_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rollout {
            Rollout::ByTags { max_concurrency, max_errors, by_ids } => writeln!(
                f,
                "  rollout    one SSM Run Command to the {}, max-concurrency {max_concurrency}, max-errors {max_errors}, command-timeout {}s per instance",
                if *by_ids { "instances below (by id: some were skipped)" } else { "tags" },
                self.timeout
            )?,
            Rollout::Batches { target_groups, batches, drain, .. } => {
                let groups: Vec<&str> = target_groups.iter().map(|g| g.short()).collect();
                writeln!(
                    f,
                    "  rollout    {} batches through target groups {}: {}; command-timeout {}s per instance",
                    batches.len(),
                    groups.join(", "),
                    if *drain {
                        "drain, swap, healthy"
                    } else {
                        "swap behind the proxy, healthy (no drain: the instances keep serving)"
                    },
                    self.timeout
                )?;
                for (n, batch) in batches.iter().enumerate() {
                    let canary = if n == 0 && batch.len() == 1 && batches.len() > 1 { " (canary)" } else { "" };
                    let ids: Vec<&str> = batch.iter().map(|i| i.as_str()).collect();
                    writeln!(f, "    batch {}{canary}: {}", n + 1, ids.join(", "))?;
                }
            }
        }
        writeln!(
            f,
            "  catch-up   instances that join the targets during the run get the release too; one still booting is sent it again for up to {}s (boot-wait)",
            self.boot_wait
        )?;
        if let Some(concurrency) = self.pull_first {
            writeln!(
                f,
                "  pull       first, on every instance ({concurrency} at once), before the first of {} batches switches: a failed pull stops the run with nothing switched",
                self.batches()
            )?;
        }
        if let Some(pre) = &self.pre_deploy {
            let words = shlex::try_join(pre.command.iter().map(String::as_str)).unwrap_or_default();
            match &pre.skipped {
                Some(why) => writeln!(f, "  pre-deploy {words}: not run ({why})")?,
                None => writeln!(
                    f,
                    "  pre-deploy {words} on {}, at most {}s, before any instance is switched (non-zero exit: nothing is)",
                    pre.target, pre.timeout
                )?,
            }
        }
        if let Some(w) = &self.watch {
            let states: Vec<String> = w
                .at_start
                .iter()
                .map(|a| {
                    let ignored =
                        if w.ignored.contains(&a.name) { ", not watched: ignore-alarms-at-start" } else { "" };
                    format!("{} {}{ignored}", a.name, a.state)
                })
                .collect();
            let when = match &self.rollout {
                Rollout::ByTags { .. } => "after the command",
                Rollout::Batches { .. } => "after each batch",
            };
            writeln!(
                f,
                "  alarms     {}; {when}, {} while watching them (ALARM: every switched instance goes back)",
                states.join(", "),
                if w.bake == 0 { "one look".to_string() } else { format!("a bake of {}s", w.bake) }
            )?;
        }
        let worst = self.worst_case();
        writeln!(
            f,
            "  duration   at most {}s once it starts, {}s with a full rollback (AWS session: role-duration-seconds {} covers it)",
            worst.rollout.as_secs(),
            worst.with_rollback.as_secs(),
            worst.role_duration_seconds()
        )?;
        if let Some(live) = &self.record.live {
            if let Some(t) = &live.release.timings {
                let (ms, model) = t.estimate(self.batches() as u64);
                writeln!(
                    f,
                    "  estimate   about {} at the pace of version {}'s deploy ({} in all): {model}",
                    crate::report::timings::seconds(ms),
                    live.version,
                    crate::report::timings::seconds(t.total_ms)
                )?;
            }
        }
        Ok(())
    }

    /// The instances found by tag, and those skipped.
    fn instance_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = self.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ");
        writeln!(f, "  instances  {} with tags {targets}:", self.instances.len())?;
        for i in &self.instances {
            writeln!(
                f,
                "    {}  {:<16} {:<15} {}",
                i.id,
                i.name.as_deref().unwrap_or("-"),
                i.ip.as_deref().unwrap_or("-"),
                i.ping
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped    {} with no SSM agent connection (on-offline: skip):", self.skipped.len())?;
            for i in &self.skipped {
                writeln!(f, "    {}  {:<16} {}", i.id, i.name.as_deref().unwrap_or("-"), i.ping)?;
            }
        }
        Ok(())
    }
}
