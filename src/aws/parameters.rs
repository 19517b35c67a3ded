//! Parameter Store (the release record and the deploy lock) over aws-sdk-ssm.

use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use super::{classify, unless_missing};
use crate::live::Live;
use crate::model::ParameterName;
use crate::ports::{Parameter, ParameterStore, Result, ServiceError};

const NOT_FOUND: &[&str] = &["ParameterNotFound"];

impl ParameterStore for Live {
    async fn get_parameter(&self, name: &ParameterName) -> Result<Option<Parameter>> {
        let result = self.aws.ssm.get_parameter().name(name.as_str()).send().await;
        let found = result.map_err(|e| classify(format!("reading SSM parameter {name}"), e, NOT_FOUND));
        Ok(unless_missing(found)?.and_then(|out| {
            let p = out.parameter()?;
            Some(Parameter { value: p.value()?.to_string(), version: p.version() })
        }))
    }

    async fn put_parameter(&self, name: &ParameterName, value: &str, overwrite: bool) -> Result<i64> {
        let out = self
            .aws
            .ssm
            .put_parameter()
            .name(name.as_str())
            .value(value)
            .r#type(ParameterType::String)
            // Over 4 KB (a long env) needs the advanced tier; Intelligent-Tiering picks it only then.
            .tier(ParameterTier::IntelligentTiering)
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| classify(format!("writing SSM parameter {name}"), e, NOT_FOUND))?;
        Ok(out.version())
    }

    async fn parameter_history(&self, name: &ParameterName) -> Result<Vec<Parameter>> {
        let mut pages =
            self.aws.ssm.get_parameter_history().name(name.as_str()).max_results(50).into_paginator().send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page = match page
                .map_err(|e| classify(format!("reading the history of SSM parameter {name}"), e, NOT_FOUND))
            {
                Ok(p) => p,
                Err(e) if e.kind == crate::ports::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(e),
            };
            for p in page.parameters() {
                out.push(Parameter { value: p.value().unwrap_or_default().to_string(), version: p.version() });
            }
        }
        out.sort_by_key(|p| p.version);
        Ok(out)
    }

    async fn delete_parameter(&self, name: &ParameterName) -> Result<()> {
        let result: std::result::Result<_, ServiceError> = self
            .aws
            .ssm
            .delete_parameter()
            .name(name.as_str())
            .send()
            .await
            .map_err(|e| classify(format!("deleting SSM parameter {name}"), e, NOT_FOUND));
        unless_missing(result).map(|_| ())
    }
}
