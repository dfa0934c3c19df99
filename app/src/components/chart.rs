//! Charts drawn on the server as SVG: they render without JavaScript, every bar and point carries
//! a `<title>` (a native tooltip), and each chart has a text summary for screen readers.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Distinguishable in light and dark mode.
const PALETTE: [&str; 8] = ["#6366f1", "#10b981", "#f59e0b", "#ef4444", "#06b6d4", "#a855f7", "#84cc16", "#64748b"];

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Index into the chart's legend.
    pub series: usize,
    pub value: i64,
    pub display: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub label: String,
    pub total_display: String,
    pub segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BarChartData {
    pub title: String,
    /// "¥12.34 in total over 30 days" — shown and read out.
    pub summary: String,
    pub legend: Vec<String>,
    pub bars: Vec<Bar>,
    /// Colours by series, where they carry meaning (failures red, never green); empty: the palette.
    #[serde(default)]
    pub colors: Vec<String>,
}

impl BarChartData {
    fn color(&self, series: usize) -> String {
        self.colors.get(series).cloned().unwrap_or_else(|| color(series).to_string())
    }
}

const W: f64 = 720.0;
const H: f64 = 220.0;
const PAD_BOTTOM: f64 = 22.0;
const PAD_TOP: f64 = 8.0;

/// Stacked bars, one per time bucket.
#[component]
pub fn BarChart(data: BarChartData, #[prop(optional)] testid: &'static str) -> impl IntoView {
    let max = data.bars.iter().map(|b| b.segments.iter().map(|s| s.value.max(0)).sum::<i64>()).max().unwrap_or(0).max(1) as f64;
    let n = data.bars.len().max(1) as f64;
    let slot = W / n;
    let bar_w = (slot * 0.7).max(1.0);
    let plot_h = H - PAD_BOTTOM - PAD_TOP;
    let label_every = (data.bars.len() / 8).max(1);
    let bars = data
        .bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let x = i as f64 * slot + (slot - bar_w) / 2.0;
            let mut y = H - PAD_BOTTOM;
            let rects = b
                .segments
                .iter()
                .filter(|s| s.value > 0)
                .map(|s| {
                    let h = s.value as f64 / max * plot_h;
                    y -= h;
                    let tip = format!("{} · {}: {}", b.label, data.legend.get(s.series).cloned().unwrap_or_default(), s.display);
                    view! { <rect x=format!("{x:.1}") y=format!("{y:.1}") width=format!("{bar_w:.1}") height=format!("{h:.1}") fill=data.color(s.series)><title>{tip}</title></rect> }
                })
                .collect_view();
            let label = (i % label_every == 0).then(|| {
                view! { <text x=format!("{:.1}", x + bar_w / 2.0) y=format!("{:.1}", H - 6.0) text-anchor="middle" class="fill-slate-500 text-[10px]">{b.label.clone()}</text> }
            });
            let total = format!("{}: {}", b.label, b.total_display);
            view! { <g data-label=b.label.clone() data-total=b.total_display.clone()><title>{total}</title>{rects}{label}</g> }
        })
        .collect_view();
    view! {
        <figure class="card" data-testid=testid>
            <figcaption class="flex flex-wrap items-baseline justify-between gap-2">
                <span class="section-title">{data.title.clone()}</span>
                <span class="text-sm text-slate-600 dark:text-slate-400" data-testid=format!("{testid}-summary")>{data.summary.clone()}</span>
            </figcaption>
            <svg viewBox=format!("0 0 {W} {H}") class="mt-3 h-48 w-full" role="img" aria-label=format!("{}: {}", data.title, data.summary) preserveAspectRatio="none">
                <line x1="0" x2=W y1=H - PAD_BOTTOM y2=H - PAD_BOTTOM class="stroke-slate-300 dark:stroke-slate-700" />
                {bars}
            </svg>
            <Legend names=data.legend.clone() colors=(0..data.legend.len()).map(|i| data.color(i)).collect() />
        </figure>
    }
}

#[component]
fn Legend(names: Vec<String>, #[prop(optional)] colors: Vec<String>) -> impl IntoView {
    (names.len() > 1).then(|| view! {
        <ul class="mt-2 flex flex-wrap gap-x-4 gap-y-1 text-xs text-slate-600 dark:text-slate-400">
            {names.into_iter().enumerate().map(|(i, n)| view! {
                <li class="flex items-center gap-1"><span class="inline-block h-2 w-2 rounded-sm" style=format!("background:{}", colors.get(i).map(String::as_str).unwrap_or(color(i)))></span>{n}</li>
            }).collect_view()}
        </ul>
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineChartData {
    pub title: String,
    pub summary: String,
    pub legend: Vec<String>,
    pub labels: Vec<String>,
    /// One series per legend entry; `None` where a bucket had no requests.
    pub series: Vec<Vec<Option<i64>>>,
    pub unit: String,
}

/// Lines over time buckets (gaps where there is no data).
#[component]
pub fn LineChart(data: LineChartData, #[prop(optional)] testid: &'static str) -> impl IntoView {
    let max = data.series.iter().flatten().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let n = data.labels.len().max(2) as f64;
    let plot_h = H - PAD_BOTTOM - PAD_TOP;
    let x_at = |i: usize| i as f64 * W / (n - 1.0);
    let y_at = |v: i64| H - PAD_BOTTOM - v as f64 / max * plot_h;
    let lines = data
        .series
        .iter()
        .enumerate()
        .map(|(si, points)| {
            // Split into runs of consecutive points so gaps stay gaps.
            let mut runs: Vec<Vec<(usize, i64)>> = vec![vec![]];
            for (i, p) in points.iter().enumerate() {
                match p {
                    Some(v) => runs.last_mut().expect("one run").push((i, *v)),
                    None if !runs.last().expect("one run").is_empty() => runs.push(vec![]),
                    None => {}
                }
            }
            let name = data.legend.get(si).cloned().unwrap_or_default();
            runs.into_iter()
                .filter(|r| !r.is_empty())
                .map(|r| {
                    let pts = r.iter().map(|(i, v)| format!("{:.1},{:.1}", x_at(*i), y_at(*v))).collect::<Vec<_>>().join(" ");
                    let dots = r
                        .iter()
                        .map(|(i, v)| {
                            let tip = format!("{} · {name}: {v} {}", data.labels.get(*i).cloned().unwrap_or_default(), data.unit);
                            view! { <circle cx=format!("{:.1}", x_at(*i)) cy=format!("{:.1}", y_at(*v)) r="3" fill=color(si)><title>{tip}</title></circle> }
                        })
                        .collect_view();
                    view! { <polyline points=pts fill="none" stroke=color(si) stroke-width="2" />{dots} }
                })
                .collect_view()
        })
        .collect_view();
    let label_every = (data.labels.len() / 8).max(1);
    let labels = data
        .labels
        .iter()
        .enumerate()
        .filter(|(i, _)| i % label_every == 0)
        .map(|(i, l)| view! { <text x=format!("{:.1}", x_at(i)) y=format!("{:.1}", H - 6.0) text-anchor="middle" class="fill-slate-500 text-[10px]">{l.clone()}</text> })
        .collect_view();
    view! {
        <figure class="card" data-testid=testid>
            <figcaption class="flex flex-wrap items-baseline justify-between gap-2">
                <span class="section-title">{data.title.clone()}</span>
                <span class="text-sm text-slate-600 dark:text-slate-400">{data.summary.clone()}</span>
            </figcaption>
            <svg viewBox=format!("0 0 {W} {H}") class="mt-3 h-48 w-full" role="img" aria-label=format!("{}: {}", data.title, data.summary) preserveAspectRatio="none">
                <line x1="0" x2=W y1=H - PAD_BOTTOM y2=H - PAD_BOTTOM class="stroke-slate-300 dark:stroke-slate-700" />
                {lines}
                {labels}
            </svg>
            <Legend names=data.legend.clone() />
        </figure>
    }
}
