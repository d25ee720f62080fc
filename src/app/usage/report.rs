//! The server side of the 用量 tab: who may see what, the store's numbers turned into the
//! [`UsageView`] (series per day, models in order of spend, exact money as text), and the
//! CSV export. Reads the daily rollup for everything but the latest rows and the CSV.

use std::collections::HashMap;

use futures::TryStreamExt;
use leptos::prelude::ServerFnError;

use super::charts::{self, Series, Unit};
use super::{BudgetBar, Chart, CodeRow, CsvFile, RecentRow, Totals, UsageView};
use crate::protocol::Yuan;
use crate::server::auth::Caller;
use crate::store::{CodeInfo, DailyUsage, Day, LedgerEntry, Outcome, Store, StoreError};

/// The longest range anyone may ask for.
const MAX_DAYS: u32 = 90;
/// Rows of the "recent requests" table.
const RECENT: u32 = 50;
/// Models with a colour of their own; the rest are one "其他" layer.
const MODEL_COLOURS: usize = charts::PALETTE.len();
/// The largest CSV the export returns in one piece.
const CSV_MAX_BYTES: usize = 32 << 20;

/// Why the tab cannot be shown. Store failures are logged, and the user told only that.
#[derive(Debug, thiserror::Error)]
pub(super) enum UsageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("导出的记录超过 32 MB，请缩短时间范围")]
    TooLarge,
}

/// A failure as the browser sees it.
pub(super) fn failed(err: UsageError) -> ServerFnError {
    match err {
        UsageError::Store(err) => {
            tracing::error!("reading usage failed: {err}");
            ServerFnError::new("服务器暂时无法读取用量，请稍后重试")
        }
        too_large => ServerFnError::new(too_large.to_string()),
    }
}

/// Whose usage the caller sees: everything for an admin (`None`), else its own code.
fn scope(caller: &Caller) -> Option<i64> {
    if caller.is_admin() {
        None
    } else {
        caller.code_id()
    }
}

fn scope_label(caller: &Caller) -> String {
    match caller {
        Caller::Open => "全部用量（尚未设置访问码）".into(),
        Caller::Code(code) if code.admin => format!("全部用量（管理员：{}）", code.name),
        Caller::Code(code) => format!("访问码「{}」的用量", code.name),
    }
}

/// The first and last day of the `days` ending today.
fn range(days: u32, now_ms: i64) -> (u32, Day, Day) {
    let days = days.clamp(1, MAX_DAYS);
    let today = Day::of_ms(now_ms);
    (days, today.add_days(1 - i64::from(days)), today)
}

/// Everything the tab shows.
pub(super) async fn build(
    store: &Store,
    caller: &Caller,
    days: u32,
    now_ms: i64,
) -> Result<UsageView, UsageError> {
    let (days, from, today) = range(days, now_ms);
    let scope = scope(caller);
    let lines = store.daily_usage(scope, days, today).await?;
    let names = if caller.is_admin() {
        code_names(store).await?
    } else {
        HashMap::new()
    };
    let by_code = if caller.is_admin() {
        by_code(store, from, today, &names).await?
    } else {
        Vec::new()
    };
    let recent = store.recent(scope, RECENT).await?;
    let totals = totals(&lines);
    let charts = if totals.requests == 0 {
        Vec::new()
    } else {
        charts(&lines, from, days)
    };
    Ok(UsageView {
        scope_label: scope_label(caller),
        admin: caller.is_admin(),
        days,
        from: from.to_string(),
        to: today.to_string(),
        totals,
        charts,
        budgets: budgets(store, caller, now_ms).await?,
        by_code,
        recent: recent
            .iter()
            .map(|entry| recent_row(entry, caller.is_admin().then_some(&names)))
            .collect(),
    })
}

/// The caller's ledger rows of the range as one CSV file.
pub(super) async fn csv(
    store: &Store,
    caller: &Caller,
    days: u32,
    now_ms: i64,
) -> Result<CsvFile, UsageError> {
    let (_, from, today) = range(days, now_ms);
    let mut pages = std::pin::pin!(store.export_csv(scope(caller), from, today));
    let mut text = String::new();
    while let Some(page) = pages.try_next().await? {
        if text.len() + page.len() > CSV_MAX_BYTES {
            return Err(UsageError::TooLarge);
        }
        text.push_str(&page);
    }
    Ok(CsvFile {
        filename: format!("streamai-usage-{from}-{today}.csv"),
        text,
    })
}

async fn code_names(store: &Store) -> Result<HashMap<i64, String>, StoreError> {
    let codes = store.list_codes().await?;
    Ok(codes.into_iter().map(|c| (c.id, c.name)).collect())
}

fn code_name(names: &HashMap<i64, String>, id: Option<i64>) -> String {
    match id.filter(|&id| id != 0) {
        None => "无访问码".into(),
        Some(id) => names.get(&id).cloned().unwrap_or_else(|| format!("#{id}")),
    }
}

async fn by_code(
    store: &Store,
    from: Day,
    to: Day,
    names: &HashMap<i64, String>,
) -> Result<Vec<CodeRow>, StoreError> {
    let mut usage = store.usage_by_code(from, to).await?;
    usage.sort_by(|a, b| b.cost.cmp(&a.cost).then(b.requests.cmp(&a.requests)));
    Ok(usage
        .into_iter()
        .map(|u| CodeRow {
            name: code_name(names, Some(u.code_id)),
            requests: u.requests,
            errors: u.errors,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost: u.cost.to_string(),
        })
        .collect())
}

fn totals(lines: &[DailyUsage]) -> Totals {
    let mut cost = Yuan::default();
    let mut totals = Totals::default();
    for line in lines {
        totals.requests += line.requests;
        totals.errors += line.errors;
        totals.stopped += line.stopped;
        totals.refused += line.refused;
        totals.prompt_tokens += line.prompt_tokens;
        totals.completion_tokens += line.completion_tokens;
        cost = cost + line.cost;
    }
    totals.cost = cost.to_string();
    totals
}

/// Today's and this month's spending (reservations of running streams included) against
/// the caller's code limits, and for an admin the deployment's daily limit.
async fn budgets(
    store: &Store,
    caller: &Caller,
    now_ms: i64,
) -> Result<Vec<BudgetBar>, StoreError> {
    let now = now_ms.div_euclid(1000);
    let mut bars = Vec::new();
    if let Some(code) = caller.code().filter(|c| has_limits(c)) {
        let spending = store.spending(Some(code.id), now).await?;
        if let Some(limit) = code.limits.daily {
            bars.push(bar(
                "今日额度",
                spending.day_spent + spending.day_reserved,
                limit,
            ));
        }
        if let Some(limit) = code.limits.monthly {
            bars.push(bar(
                "本月额度",
                spending.month_spent + spending.month_reserved,
                limit,
            ));
        }
    }
    if let Some(limit) = store.global_daily_limit().filter(|_| caller.is_admin()) {
        let spending = store.spending(None, now).await?;
        bars.push(bar(
            "全站今日额度",
            spending.day_spent + spending.day_reserved,
            limit,
        ));
    }
    Ok(bars)
}

fn has_limits(code: &CodeInfo) -> bool {
    code.limits.daily.is_some() || code.limits.monthly.is_some()
}

fn bar(label: &str, spent: Yuan, limit: Yuan) -> BudgetBar {
    BudgetBar {
        label: label.into(),
        spent: spent.to_string(),
        limit: limit.to_string(),
        remaining: Yuan(limit.0.saturating_sub(spent.0)).to_string(),
        value: yuan_f64(spent.min(limit)),
        max: yuan_f64(limit),
    }
}

/// For drawing only; totals stay exact strings.
fn yuan_f64(amount: Yuan) -> f64 {
    amount.0 as f64 / 1e12
}

/// `11-27`.
fn day_label(day: Day) -> String {
    let (_, month, day) = day.ymd();
    format!("{month:02}-{day:02}")
}

/// The days of the range, and each rollup line's index among them.
fn day_index(from: Day, days: u32, day: Day) -> Option<usize> {
    (0..days as usize).find(|&i| from.add_days(i as i64) == day)
}

/// Models in order of spend (then requests), each with its total.
fn models_by_spend(lines: &[DailyUsage]) -> Vec<(String, DailyUsage)> {
    let mut models: Vec<(String, DailyUsage)> = Vec::new();
    for line in lines {
        match models.iter_mut().find(|(name, _)| *name == line.model) {
            Some((_, total)) => total.merge(line),
            None => models.push((line.model.clone(), line.clone())),
        }
    }
    models.sort_by(|a, b| {
        b.1.cost
            .cmp(&a.1.cost)
            .then(b.1.requests.cmp(&a.1.requests))
            .then(a.0.cmp(&b.0))
    });
    models
}

fn charts(lines: &[DailyUsage], from: Day, days: u32) -> Vec<Chart> {
    let n = days as usize;
    let labels: Vec<String> = (0..n).map(|i| day_label(from.add_days(i as i64))).collect();
    let per_day = |f: &dyn Fn(&DailyUsage) -> f64, only: &dyn Fn(&DailyUsage) -> bool| {
        let mut values = vec![0.0; n];
        for line in lines.iter().filter(|l| only(l)) {
            if let Some(i) = day_index(from, days, line.day) {
                values[i] += f(line);
            }
        }
        values
    };
    let models = models_by_spend(lines);
    let total = totals(lines);

    // Spend per day, stacked by model (the cheapest beyond the palette as one layer).
    let coloured: Vec<&str> = models
        .iter()
        .take(MODEL_COLOURS)
        .map(|(m, _)| m.as_str())
        .collect();
    let mut spend: Vec<Series> = coloured
        .iter()
        .zip(charts::PALETTE)
        .map(|(model, color)| Series {
            name: (*model).to_owned(),
            color,
            values: per_day(&|l| yuan_f64(l.cost), &|l| l.model == *model),
        })
        .collect();
    if models.len() > MODEL_COLOURS {
        spend.push(Series {
            name: "其他".into(),
            color: charts::OTHER,
            values: per_day(&|l| yuan_f64(l.cost), &|l| {
                !coloured.contains(&l.model.as_str())
            }),
        });
    }
    let all = |_: &DailyUsage| true;
    let tokens = [
        (
            "输入",
            charts::BLUE,
            per_day(&|l| l.prompt_tokens as f64, &all),
        ),
        (
            "输出",
            charts::AMBER,
            per_day(&|l| l.completion_tokens as f64, &all),
        ),
    ];
    let requests = [
        ("成功", charts::BLUE, per_day(&|l| ok(l) as f64, &all)),
        ("中止", charts::GREY, per_day(&|l| l.stopped as f64, &all)),
        ("错误", charts::RED, per_day(&|l| l.errors as f64, &all)),
        ("拒绝", charts::AMBER, per_day(&|l| l.refused as f64, &all)),
    ];
    let series = |list: &[(&str, plotters::style::RGBColor, Vec<f64>)]| -> Vec<Series> {
        list.iter()
            .map(|(name, color, values)| Series {
                name: (*name).into(),
                color: *color,
                values: values.clone(),
            })
            .collect()
    };

    // First-token time per model, over the whole range (histograms merge exactly).
    let timed: Vec<&(String, DailyUsage)> =
        models.iter().filter(|(_, u)| u.ttft_count > 0).collect();
    let percentile = |p: f64| -> Vec<f64> {
        timed
            .iter()
            .map(|(_, u)| u.ttft_percentile_ms(p).unwrap_or(0) as f64)
            .collect()
    };
    let ttft_names: Vec<String> = timed.iter().map(|(m, _)| m.clone()).collect();
    let ttft_summary = timed
        .iter()
        .map(|(m, u)| {
            format!(
                "{m} p50 {} 毫秒、p95 {} 毫秒",
                u.ttft_percentile_ms(0.5).unwrap_or(0),
                u.ttft_percentile_ms(0.95).unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join("；");
    let ttft = if timed.is_empty() {
        String::new()
    } else {
        charts::grouped_hbars(
            &ttft_names,
            &[
                Series {
                    name: "p50".into(),
                    color: charts::BLUE,
                    values: percentile(0.5),
                },
                Series {
                    name: "p95".into(),
                    color: charts::AMBER,
                    values: percentile(0.95),
                },
            ],
            Unit::Millis,
        )
    };

    vec![
        Chart {
            key: "spend".into(),
            title: "每日花费（按模型）".into(),
            summary: format!("{days} 天共花费 ¥{}，{} 个模型", total.cost, models.len()),
            svg: charts::stacked_bars(&labels, &spend, Unit::Yuan),
        },
        Chart {
            key: "tokens".into(),
            title: "每日 Token（输入 / 输出）".into(),
            summary: format!(
                "{days} 天输入 {} Token，输出 {} Token",
                total.prompt_tokens, total.completion_tokens
            ),
            svg: charts::lines(&labels, &series(&tokens), Unit::Tokens),
        },
        Chart {
            key: "requests".into(),
            title: "每日请求与错误".into(),
            summary: format!(
                "{days} 天共 {} 次请求：错误 {}，中止 {}，拒绝 {}",
                total.requests, total.errors, total.stopped, total.refused
            ),
            svg: charts::stacked_bars(&labels, &series(&requests), Unit::Count),
        },
        Chart {
            key: "ttft".into(),
            title: "首字延迟 p50 / p95（按模型）".into(),
            summary: if ttft_summary.is_empty() {
                "这段时间没有收到首字的请求".into()
            } else {
                ttft_summary
            },
            svg: ttft,
        },
    ]
}

/// Requests that ended normally.
fn ok(line: &DailyUsage) -> u64 {
    line.requests
        .saturating_sub(line.errors + line.stopped + line.refused)
}

fn recent_row(entry: &LedgerEntry, names: Option<&HashMap<i64, String>>) -> RecentRow {
    let row = &entry.row;
    let (outcome, kind) = outcome_text(&row.outcome);
    RecentRow {
        time: beijing_time(row.at_ms),
        code: names.map(|names| code_name(names, row.code_id)),
        model: row.model.clone(),
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        cost: row.cost.to_string(),
        ttft: row.first_token_ms.map_or_else(|| "—".into(), duration_text),
        outcome,
        outcome_kind: kind.into(),
    }
}

/// `11-27 14:03:05`, Beijing time.
fn beijing_time(at_ms: i64) -> String {
    let day = Day::of_ms(at_ms);
    let secs = (at_ms - day.start_ms()) / 1000;
    format!(
        "{} {:02}:{:02}:{:02}",
        day_label(day),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `850 毫秒`, `1.2 秒`.
fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} 毫秒")
    } else {
        format!("{:.1} 秒", ms as f64 / 1000.0)
    }
}

/// The outcome in Chinese, and its kind for the row's class.
fn outcome_text(outcome: &Outcome) -> (String, &'static str) {
    match outcome {
        Outcome::Done => ("完成".into(), "ok"),
        Outcome::Stopped => ("已停止".into(), "stopped"),
        Outcome::Error(code) => {
            let why = match code.as_str() {
                "rate_limited" => "上游限流",
                "auth_failed" => "密钥无效",
                "upstream" => "上游错误",
                "timeout" => "超时",
                "disconnected" => "连接中断",
                "protocol" => "上游数据异常",
                "shutdown" => "服务重启",
                other => other,
            };
            (format!("出错：{why}"), "error")
        }
        Outcome::Refused(reason) => {
            let why = match reason.as_str() {
                "budget" => "额度不足",
                "rpm" => "请求过于频繁",
                "concurrent" => "并发已满",
                "code" => "访问码无效",
                other => other,
            };
            (format!("已拒绝：{why}"), "refused")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LedgerRow;

    fn line(day: Day, model: &str, cost_pico: u128, requests: u64) -> DailyUsage {
        DailyUsage {
            day,
            provider: "p".into(),
            model: model.into(),
            requests,
            errors: 1,
            stopped: 0,
            refused: 0,
            prompt_tokens: 100,
            completion_tokens: 50,
            reasoning_tokens: 0,
            cost: Yuan(cost_pico),
            duration_ms_sum: 0,
            ttft_count: requests,
            ttft_ms_sum: 300 * requests,
            ttft_ms_max: 450,
            ttft_histogram: {
                let mut h = [0; crate::store::TTFT_BUCKETS_MS.len() + 1];
                h[3] = requests;
                h
            },
        }
    }

    #[test]
    fn times_are_beijing() {
        // 2026-11-26T16:03:05Z is 11-27 00:03:05 in Beijing.
        let at = Day::from_ymd(2026, 11, 27).unwrap().start_ms() + 185_000;
        assert_eq!(beijing_time(at), "11-27 00:03:05");
        assert_eq!(duration_text(850), "850 毫秒");
        assert_eq!(duration_text(1250), "1.2 秒");
    }

    #[test]
    fn outcomes_read_in_chinese() {
        assert_eq!(outcome_text(&Outcome::Done), ("完成".into(), "ok"));
        assert_eq!(
            outcome_text(&Outcome::Error("upstream".into())).0,
            "出错：上游错误"
        );
        assert_eq!(
            outcome_text(&Outcome::Refused("budget".into())).0,
            "已拒绝：额度不足"
        );
    }

    #[test]
    fn totals_are_exact_and_charts_cover_every_day() {
        let today = Day::from_ymd(2026, 11, 27).unwrap();
        let from = today.add_days(-6);
        // 0.1 + 0.2 yuan: exactly 0.3 in the totals.
        let lines = vec![
            line(from, "b", 100_000_000_000, 2),
            line(today, "a", 200_000_000_000, 3),
        ];
        let t = totals(&lines);
        assert_eq!((t.requests, t.errors, t.cost.as_str()), (5, 2, "0.3"));
        let order: Vec<String> = models_by_spend(&lines)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(order, ["a", "b"]);
        let charts = charts(&lines, from, 7);
        let keys: Vec<&str> = charts.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["spend", "tokens", "requests", "ttft"]);
        for chart in &charts {
            assert!(chart.svg.starts_with("<svg"), "{}", chart.key);
        }
        assert!(charts[0].svg.contains("\n11-21\n") && charts[0].svg.contains("\n11-27\n"));
        assert!(
            charts[3].summary.contains("p50 400 毫秒"),
            "{}",
            charts[3].summary
        );
        let bar = bar("今日额度", Yuan(3), Yuan(2));
        assert_eq!(
            (bar.remaining.as_str(), bar.value, bar.max),
            ("0", 2e-12, 2e-12)
        );
    }

    fn ledger_row(at_ms: i64, code_id: Option<i64>, cost: &str, outcome: Outcome) -> LedgerRow {
        LedgerRow {
            at_ms,
            code_id,
            provider: "p".into(),
            model: "m".into(),
            key_id: Some("key#1".into()),
            prompt_tokens: 10,
            completion_tokens: 20,
            reasoning_tokens: 0,
            usage_source: crate::protocol::UsageSource::Provider,
            cost: Yuan::parse(cost).unwrap(),
            first_token_ms: Some(300),
            duration_ms: 900,
            retries: 0,
            outcome,
        }
    }

    /// A code sees its own usage only; an admin sees everything, per code too.
    #[tokio::test]
    async fn each_caller_sees_what_it_may() {
        let dir =
            std::env::temp_dir().join(format!("streamai-usage-{}", crate::store::unix_now_ms()));
        let store = Store::connect(&crate::store::sqlite_url(&dir.join("usage.db")))
            .await
            .unwrap()
            .with_global_daily_limit(Yuan::parse("10"));
        let now_ms = crate::store::unix_now_ms();
        let code = |name: &str, admin: bool| crate::store::NewCode {
            name: name.into(),
            admin,
            limits: crate::store::Limits {
                daily: Yuan::parse("2"),
                ..Default::default()
            },
        };
        let (admin, _) = store
            .create_code(code("管理员", true), now_ms / 1000)
            .await
            .unwrap();
        let (team, _) = store
            .create_code(code("设计组", false), now_ms / 1000)
            .await
            .unwrap();
        let rows = [
            ledger_row(now_ms - 1000, Some(team.id), "0.1", Outcome::Done),
            ledger_row(
                now_ms - 900,
                Some(team.id),
                "0.2",
                Outcome::Error("upstream".into()),
            ),
            ledger_row(now_ms - 800, Some(admin.id), "1", Outcome::Done),
            ledger_row(now_ms - 700, None, "0", Outcome::Refused("rpm".into())),
        ];
        store.insert_ledger_rows(&rows).await.unwrap();

        let mine = build(&store, &Caller::Code(Box::new(team.clone())), 7, now_ms)
            .await
            .unwrap();
        assert_eq!(mine.scope_label, "访问码「设计组」的用量");
        assert_eq!(
            (mine.totals.requests, mine.totals.cost.as_str()),
            (2, "0.3")
        );
        assert_eq!(mine.recent.len(), 2);
        assert!(mine.recent.iter().all(|r| r.code.is_none()));
        assert!(mine.by_code.is_empty() && !mine.admin);
        // Its own daily limit; not the deployment's.
        let labels: Vec<&str> = mine.budgets.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["今日额度"]);
        assert_eq!(mine.charts.len(), 4);

        for caller in [Caller::Open, Caller::Code(Box::new(admin.clone()))] {
            let all = build(&store, &caller, 30, now_ms).await.unwrap();
            assert_eq!((all.totals.requests, all.totals.cost.as_str()), (4, "1.3"));
            assert_eq!(all.recent.len(), 4);
            assert_eq!(all.recent[0].outcome, "已拒绝：请求过于频繁");
            assert_eq!(all.recent[0].code.as_deref(), Some("无访问码"));
            let codes: Vec<(&str, &str)> = all
                .by_code
                .iter()
                .map(|c| (c.name.as_str(), c.cost.as_str()))
                .collect();
            assert_eq!(
                codes,
                [("管理员", "1"), ("设计组", "0.3"), ("无访问码", "0")]
            );
            assert!(all.budgets.iter().any(|b| b.label == "全站今日额度"));
        }

        let csv = csv(&store, &Caller::Code(Box::new(team)), 7, now_ms)
            .await
            .unwrap();
        assert_eq!(csv.text.lines().count(), 3, "{}", csv.text);
        assert!(csv.text.lines().skip(1).all(|line| line.contains("设计组")));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
