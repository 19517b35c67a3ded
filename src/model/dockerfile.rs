//! Which stages of a multi-stage Dockerfile need a layer cache of their own.
//!
//! A build's inline cache (`BUILDKIT_INLINE_CACHE=1`) records the layers of the image it makes,
//! which are the layers of the built stage and of the stages it starts `FROM`. A stage the image
//! only copies from (`COPY --from=deps`, `RUN --mount=…,from=deps`) leaves no layer in it, so a
//! later build that reads the image back as its cache finds nothing of that stage and runs it
//! again. Those stages are built and pushed as images of their own, each with its inline cache:
//! this module finds them. The Dockerfile is read with `parse-dockerfile`.

use std::collections::BTreeSet;

use parse_dockerfile::{Flag, Instruction};
use serde::Serialize;

/// The stages to cache beside the image, and what could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageCache {
    /// Named stages the built stage copies from, directly or through other stages, in the
    /// Dockerfile's order (which is the order they can be built in). Lower case, as BuildKit
    /// matches them.
    pub stages: Vec<String>,
    /// Why some layers are not cached: a stage copied from by its number (it has no name to
    /// build it by), or a Dockerfile this module could not read.
    pub notes: Vec<String>,
}

/// What the image's build needs of the Dockerfile `text`, building `target` (the last stage when
/// `None`). Errs only when `target` names no stage: Docker's build would fail the same way.
pub fn stage_cache(text: &str, target: Option<&str>) -> Result<StageCache, String> {
    let dockerfile = match parse_dockerfile::parse(text) {
        Ok(d) => d,
        // Docker's own parser decides what a Dockerfile is; this one may lag behind new syntax.
        Err(e) => {
            return Ok(StageCache {
                stages: vec![],
                notes: vec![format!(
                    "the Dockerfile was not understood here ({e}): only the built stage's layers are cached"
                )],
            })
        }
    };
    let stages: Vec<Stage> = dockerfile
        .stages()
        .map(|s| Stage {
            name: s.from.as_.as_ref().map(|(_, name)| name.value.to_lowercase()),
            parent: s.from.image.value.to_lowercase(),
            copies: s.instructions.iter().flat_map(copied_from).collect(),
        })
        .collect();
    let built = match target {
        None => stages.len().checked_sub(1).ok_or("the Dockerfile has no FROM")?,
        Some(t) => stages.iter().position(|s| s.name.as_deref() == Some(&t.to_lowercase())).ok_or_else(|| {
            let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            if names.is_empty() {
                format!("no stage of the Dockerfile is named {t:?} (none has a name: FROM … AS NAME)")
            } else {
                format!("no stage of the Dockerfile is named {t:?}; its stages are {}", names.join(", "))
            }
        })?,
    };
    // A stage is found among those before it, by name or by number (BuildKit's rule).
    let find = |reference: &str, before: usize| -> Option<usize> {
        if let Ok(n) = reference.parse::<usize>() {
            return (n < before).then_some(n);
        }
        stages[..before].iter().rposition(|s| s.name.as_deref() == Some(reference))
    };
    // Every stage the build needs: the built one, its FROMs and what they copy from.
    let mut needed = BTreeSet::new();
    let mut todo = vec![built];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(find(&stages[i].parent, i));
            todo.extend(stages[i].copies.iter().filter_map(|r| find(r, i)));
        }
    }
    // The built stage's chain of FROMs is in its own image (and so in its inline cache).
    let mut chain = BTreeSet::new();
    let mut next = Some(built);
    while let Some(i) = next {
        chain.insert(i);
        next = find(&stages[i].parent, i);
    }
    // Each stage copied from is kept as an image of its own, which holds its own chain.
    let copied: BTreeSet<usize> =
        needed.iter().flat_map(|&j| stages[j].copies.iter().filter_map(move |r| find(r, j))).collect();
    let mut cache = StageCache::default();
    for i in copied.difference(&chain) {
        match &stages[*i].name {
            Some(name) => cache.stages.push(name.clone()),
            None => cache.notes.push(format!(
                "stage {i} has no name, so it cannot be built by itself and its layers are not cached: name it (FROM … AS NAME)"
            )),
        }
    }
    Ok(cache)
}

struct Stage {
    name: Option<String>,
    /// The `FROM` image: another stage's name or number, or an image.
    parent: String,
    /// The stages (or images) its `COPY --from` and `RUN --mount=…,from=` name.
    copies: Vec<String>,
}

/// What one instruction copies from.
fn copied_from(instruction: &Instruction<'_>) -> Vec<String> {
    let flag_value = |f: &Flag<'_>| f.value.as_ref().map(|v| v.value.to_string());
    let found: Vec<String> = match instruction {
        Instruction::Copy(copy) => {
            copy.options.iter().filter(|f| f.name.value == "from").filter_map(flag_value).collect()
        }
        Instruction::Run(run) => run
            .options
            .iter()
            .filter(|f| f.name.value == "mount")
            .filter_map(flag_value)
            .filter_map(|mount| mount.split(',').find_map(|kv| kv.trim().strip_prefix("from=").map(str::to_string)))
            .collect(),
        _ => vec![],
    };
    // `--from=$STAGE` is decided by build arguments: not followed.
    found.into_iter().map(|r| r.to_lowercase()).filter(|r| !r.contains('$')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(text: &str, target: Option<&str>) -> Vec<String> {
        stage_cache(text, target).unwrap().stages
    }

    #[test]
    fn a_stage_copied_from_is_cached_and_its_parent_comes_with_it() {
        let text = "FROM base AS deps\nRUN make deps\nFROM deps AS build\nCOPY . .\nRUN make\n\
                    FROM base AS runtime\nCOPY --from=build /out /out\n";
        assert_eq!(stages(text, None), ["build"]);
    }

    #[test]
    fn the_built_stages_own_chain_needs_no_cache_of_its_own() {
        // the demo app's Dockerfile: `app` starts FROM `bare`
        let text = "FROM scratch AS bare\nCOPY demo-app /demo-app\nFROM bare AS app\nHEALTHCHECK CMD [\"x\"]\n";
        assert_eq!(stage_cache(text, None).unwrap(), StageCache::default());
        assert_eq!(stage_cache(text, Some("bare")).unwrap(), StageCache::default());
        let single = "FROM scratch\nCOPY a /a\n";
        assert_eq!(stage_cache(single, None).unwrap(), StageCache::default());
    }

    #[test]
    fn copies_are_followed_through_stages_and_mounts_in_file_order() {
        let text = "FROM base AS tools\nRUN fetch\nFROM base AS assets\nRUN --mount=type=cache,target=/c \
                    --mount=type=bind,from=tools,source=/t,target=/t make\nFROM base AS unused\nRUN slow\n\
                    FROM base AS Server\nCOPY --from=assets /a /a\nFROM base\nCOPY --from=server /s /s\n\
                    COPY --from=example.com/img:1 /x /x\n";
        assert_eq!(stages(text, None), ["tools", "assets", "server"]);
        // building an earlier stage takes only what it needs
        assert_eq!(stages(text, Some("assets")), ["tools"]);
        assert_eq!(stages(text, Some("SERVER")), ["tools", "assets"]);
    }

    #[test]
    fn a_stage_copied_by_number_is_named_in_a_note_when_it_has_no_name() {
        let text =
            "FROM base\nRUN make\nFROM base AS named\nRUN x\nFROM base\nCOPY --from=0 /a /a\nCOPY --from=1 /b /b\n";
        let cache = stage_cache(text, None).unwrap();
        assert_eq!(cache.stages, ["named"]);
        assert_eq!(cache.notes.len(), 1, "{:?}", cache.notes);
        assert!(cache.notes[0].starts_with("stage 0 has no name"), "{:?}", cache.notes);
    }

    #[test]
    fn a_target_that_names_no_stage_is_an_error_naming_the_stages() {
        let text = "FROM base AS deps\nFROM deps AS app\n";
        let e = stage_cache(text, Some("ap")).unwrap_err();
        assert_eq!(e, "no stage of the Dockerfile is named \"ap\"; its stages are deps, app");
        assert!(stage_cache("FROM base\n", Some("app")).unwrap_err().contains("none has a name"));
    }

    #[test]
    fn a_dockerfile_it_cannot_read_leaves_a_note_not_an_error() {
        let cache = stage_cache("FROM base AS a\nCOPY --from=a\n", None).unwrap();
        assert!(cache.stages.is_empty());
        assert!(cache.notes[0].starts_with("the Dockerfile was not understood here"), "{:?}", cache.notes);
    }
}
