//! CloudWatch alarms, read with DescribeAlarms: by name (up to 100 a call) and by prefix (one
//! call each), every page.

use std::collections::BTreeMap;

use super::classify;
use crate::live::Live;
use crate::model::{AlarmSelector, AlarmState, AlarmStatus};
use crate::ports::{Alarms, Result};
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};

impl Alarms for Live {
    async fn alarms(&self, selectors: &[AlarmSelector]) -> Result<Vec<AlarmStatus>> {
        let names: Vec<&str> = selectors
            .iter()
            .filter_map(|s| match s {
                AlarmSelector::Name(n) => Some(n.as_str()),
                AlarmSelector::Prefix(_) => None,
            })
            .collect();
        // Metric and composite alarms alike (without AlarmTypes, only metric alarms are listed).
        let describe = || {
            self.aws
                .cloudwatch
                .describe_alarms()
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
        };
        let mut calls: Vec<_> = names
            .chunks(100)
            .map(|chunk| describe().set_alarm_names(Some(chunk.iter().map(|n| n.to_string()).collect())))
            .collect();
        for s in selectors {
            if let AlarmSelector::Prefix(p) = s {
                calls.push(describe().alarm_name_prefix(p));
            }
        }
        let mut found = BTreeMap::new();
        for call in calls {
            let mut pages = call.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| classify("reading CloudWatch alarms (cloudwatch:DescribeAlarms)", e, &[]))?;
                for a in
                    page.metric_alarms().iter().map(|a| (a.alarm_name(), a.state_value(), a.state_reason())).chain(
                        page.composite_alarms().iter().map(|a| (a.alarm_name(), a.state_value(), a.state_reason())),
                    )
                {
                    let (Some(name), state, reason) = a else { continue };
                    let state = match state {
                        Some(StateValue::Alarm) => AlarmState::Alarm,
                        Some(StateValue::Ok) => AlarmState::Ok,
                        _ => AlarmState::InsufficientData,
                    };
                    found.insert(
                        name.to_string(),
                        AlarmStatus { name: name.to_string(), state, reason: reason.unwrap_or_default().to_string() },
                    );
                }
            }
        }
        Ok(found.into_values().collect())
    }
}
