//! The public status page (anyone, signed in or not) and the incidents staff post on it. The
//! page's figures come from the instance's cached report (`StatusBoard`), the same one
//! `/status.json` serves; staff read and write incidents directly.

#[allow(unused_imports)]
use crate::i18n::{t, tf, tr};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// "operational", "degraded" or "major_outage" (the headline's colour).
    pub condition: String,
    pub headline: String,
    pub updated: String,
    pub channels: Vec<ChannelView>,
    pub open: Vec<IncidentView>,
    pub resolved: Vec<IncidentView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    pub code: String,
    pub name: String,
    pub condition: String,
    pub condition_text: String,
    /// "99.95%", or "No data".
    pub availability_24h: String,
    pub availability_90d: String,
    /// "850 ms", "1.2 s", or "—".
    pub latency_24h: String,
    pub ttft_24h: String,
    /// The 90 days, oldest first.
    pub days: Vec<DayView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayView {
    /// "none" (no data), "good" (≥ 99.9 %), "fair" (≥ 99 %), "poor" (≥ 95 %) or "bad".
    pub level: String,
    /// The day's figures in words (the bar's tooltip).
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentView {
    pub id: String,
    pub title: String,
    /// "investigating", "identified", "monitoring" or "resolved".
    pub status: String,
    pub status_text: String,
    /// "minor" or "major".
    pub impact: String,
    pub impact_text: String,
    /// The affected channels' names, or empty.
    pub channels: String,
    pub started: String,
    pub resolved: Option<String>,
    /// Newest first.
    pub updates: Vec<UpdateView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateView {
    pub status_text: String,
    pub message: String,
    pub at: String,
}

/// The incident list staff work from: open ones and those resolved in the last 90 days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentsAdminView {
    pub open: Vec<IncidentView>,
    pub resolved: Vec<IncidentView>,
    /// (code, name) of every channel, for the form.
    pub channels: Vec<(String, String)>,
}

#[cfg(feature = "ssr")]
mod build {
    use super::*;
    use crate::i18n::{lang, Lang};
    use crate::ssr::when;
    use cloudrouter_core::status::{Bilingual, Condition, Figures, Impact, Incident, IncidentStatus};
    use std::collections::HashMap;

    fn in_lang(b: &Bilingual) -> String {
        match lang() {
            Lang::En => b.en.clone(),
            Lang::Zh => b.zh.clone(),
        }
    }

    fn condition_text(c: Condition) -> &'static str {
        t(match c {
            Condition::Operational => "Operational",
            Condition::Degraded => "Degraded performance",
            Condition::MajorOutage => "Major outage",
        })
    }

    fn headline(c: Condition) -> &'static str {
        t(match c {
            Condition::Operational => "All systems operational",
            Condition::Degraded => "Some systems are degraded",
            Condition::MajorOutage => "Major outage in progress",
        })
    }

    fn status_text(s: IncidentStatus) -> &'static str {
        t(match s {
            IncidentStatus::Investigating => "Investigating",
            IncidentStatus::Identified => "Identified",
            IncidentStatus::Monitoring => "Monitoring",
            IncidentStatus::Resolved => "Resolved",
        })
    }

    fn impact_text(i: Impact) -> &'static str {
        t(match i {
            Impact::Minor => "Minor: degraded",
            Impact::Major => "Major: outage",
        })
    }

    fn percent(f: &Figures) -> String {
        f.availability_text(2).map(|p| format!("{p}%")).unwrap_or_else(|| t("No data").into())
    }

    fn duration(ms: Option<i32>) -> String {
        match ms {
            None => "—".into(),
            Some(ms) if ms < 1000 => format!("{ms} ms"),
            Some(ms) => format!("{:.1} s", f64::from(ms) / 1000.0),
        }
    }

    /// The bar's colour, from exact counts: ≥ 99.9 %, ≥ 99 %, ≥ 95 %, below.
    fn level(f: &Figures) -> &'static str {
        let (n, ok) = (i128::from(f.requests), i128::from(f.requests - f.failures));
        match () {
            _ if n == 0 => "none",
            _ if ok * 1000 >= n * 999 => "good",
            _ if ok * 100 >= n * 99 => "fair",
            _ if ok * 100 >= n * 95 => "poor",
            _ => "bad",
        }
    }

    fn day(d: &cloudrouter_core::status::Day) -> DayView {
        let date = d.date.format("%Y-%m-%d").to_string();
        let f = &d.figures;
        let label = match f.requests {
            0 => tf("{}: no data", &[&date]),
            n => tf("{}: {} available · {} requests · {} failed · median {}", &[&date, &percent(f), &n, &f.failures, &duration(f.median_latency_ms)]),
        };
        DayView { level: level(f).into(), label }
    }

    pub fn incident(i: &Incident, names: &HashMap<String, String>) -> IncidentView {
        IncidentView {
            id: i.id.to_string(),
            title: in_lang(&i.title),
            status: i.status.as_str().into(),
            status_text: status_text(i.status).into(),
            impact: i.impact.as_str().into(),
            impact_text: impact_text(i.impact).into(),
            channels: i.channels.iter().map(|c| names.get(c).map_or_else(|| c.clone(), |n| tr(n))).collect::<Vec<_>>().join(", "),
            started: when(i.started_at),
            resolved: i.resolved_at.map(when),
            updates: i
                .updates
                .iter()
                .map(|u| UpdateView { status_text: status_text(u.status).into(), message: in_lang(&u.message), at: when(u.posted_at) })
                .collect(),
        }
    }

    pub fn view(r: &cloudrouter_core::status::StatusReport) -> StatusView {
        let names: HashMap<String, String> = r.channels.iter().map(|c| (c.code.clone(), c.name.clone())).collect();
        StatusView {
            condition: r.condition.as_str().into(),
            headline: headline(r.condition).into(),
            updated: when(r.generated_at),
            channels: r
                .channels
                .iter()
                .map(|c| ChannelView {
                    code: c.code.clone(),
                    name: tr(&c.name),
                    condition: c.condition.as_str().into(),
                    condition_text: condition_text(c.condition).into(),
                    availability_24h: percent(&c.last_24_hours),
                    availability_90d: percent(&c.last_90_days),
                    latency_24h: duration(c.last_24_hours.median_latency_ms),
                    ttft_24h: duration(c.last_24_hours.median_ttft_ms),
                    days: c.days.iter().map(day).collect(),
                })
                .collect(),
            open: r.open_incidents.iter().map(|i| incident(i, &names)).collect(),
            resolved: r.resolved_incidents.iter().map(|i| incident(i, &names)).collect(),
        }
    }

    /// A form's choice of a stored code; anything else is refused in words.
    pub fn choice<T: std::str::FromStr>(code: &str) -> Result<T, ServerFnError> {
        code.trim().parse().map_err(|_| ServerFnError::new(t("Choose one of the options.")))
    }

    /// An incident the form got wrong, in the caller's language (database errors stay generic).
    pub fn incident_error(e: cloudrouter_core::status::incidents::IncidentError) -> ServerFnError {
        use cloudrouter_core::status::incidents::IncidentError as E;
        ServerFnError::new(match e {
            E::Db(e) => return crate::ssr::internal(e),
            E::NoTitle => t("Write a title, in English, Chinese or both.").to_string(),
            E::TitleTooLong => t("The title is too long (200 characters at most).").to_string(),
            E::NoMessage => t("Write a message, in English, Chinese or both.").to_string(),
            E::MessageTooLong => t("The message is too long (4000 characters at most).").to_string(),
            E::UnknownChannel(c) => tf("unknown channel: {}", &[&c]),
            E::NotFound => t("No such incident.").to_string(),
        })
    }
}

/// The public status page's data (no sign-in).
#[server(endpoint = "status")]
pub async fn public_status() -> Result<StatusView, ServerFnError> {
    let report = crate::ssr::state()?.status.current().await.map_err(crate::ssr::internal)?;
    Ok(build::view(&report))
}

#[server(endpoint = "admin/incidents")]
pub async fn admin_incidents() -> Result<IncidentsAdminView, ServerFnError> {
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let channels = cloudrouter_core::catalogue::list_channels(&pool).await.map_err(crate::ssr::internal)?;
    let since = chrono::Utc::now() - chrono::Duration::days(90);
    let (open, resolved) = cloudrouter_core::status::incidents::open_and_resolved(&pool, since, 100).await.map_err(crate::ssr::internal)?;
    let names = channels.iter().map(|c| (c.code.clone(), c.name.clone())).collect();
    Ok(IncidentsAdminView {
        open: open.iter().map(|i| build::incident(i, &names)).collect(),
        resolved: resolved.iter().map(|i| build::incident(i, &names)).collect(),
        channels: channels.into_iter().map(|c| (c.code, tr(&c.name))).collect(),
    })
}

/// Opens an incident on the status page (audited); this instance's page shows it at once.
#[server(endpoint = "admin/incidents/open")]
pub async fn open_incident(
    title_en: String,
    title_zh: String,
    impact: String,
    channels: String,
    status: String,
    message_en: String,
    message_zh: String,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::status::incidents::{self, NewIncident};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let new = NewIncident {
        title_en,
        title_zh,
        impact: build::choice(&impact)?,
        channels: channels.split([',', ' ']).filter(|c| !c.is_empty()).map(String::from).collect(),
        status: build::choice(&status)?,
        message_en,
        message_zh,
    };
    let mut tx = crate::ssr::begin().await?;
    let id = incidents::open(&mut tx, staff.id, &new).await.map_err(build::incident_error)?;
    let details = serde_json::json!({"title_en": new.title_en.trim(), "title_zh": new.title_zh.trim(), "impact": new.impact, "status": new.status, "channels": new.channels});
    crate::ssr::commit_audited(tx, staff.id, "incident.open", &format!("incident:{id}"), details).await?;
    state.status.forget().await;
    Ok(t("Incident posted. The status page shows it now.").into())
}

/// Posts an update to an incident: its new status and impact, and what changed (audited).
#[server(endpoint = "admin/incidents/update")]
pub async fn update_incident(id: String, status: String, impact: String, message_en: String, message_zh: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::status::incidents::{self, NewUpdate};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let id = crate::ssr::parse_uuid(&id, "No such incident.")?;
    let update = NewUpdate { status: build::choice(&status)?, impact: build::choice(&impact)?, message_en, message_zh };
    let mut tx = crate::ssr::begin().await?;
    incidents::update(&mut tx, staff.id, id, &update).await.map_err(build::incident_error)?;
    let details = serde_json::json!({"status": update.status, "impact": update.impact});
    crate::ssr::commit_audited(tx, staff.id, "incident.update", &format!("incident:{id}"), details).await?;
    state.status.forget().await;
    Ok(t("Update posted.").into())
}
