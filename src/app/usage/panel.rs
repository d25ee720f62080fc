//! The 用量 tab's report as HTML, rendered on the server: whose usage, the budgets, the
//! totals, the charts and the tables. None of it reacts to anything, so the browser needs
//! no code for it: [`render`] turns it into a string that the page inserts (`UsagePanel`),
//! which keeps the chat's WASM from growing with this tab. Leptos escapes every text and
//! attribute; the only raw markup is the charts' sanitized SVG.

use leptos::prelude::*;

use super::{BudgetBar, Chart, CodeRow, RecentRow, Totals, UsageView};

/// The report as HTML.
pub(super) fn render(view: UsageView) -> String {
    view! { <UsageReport view/> }.to_html()
}

/// The report under the header: whose, budgets, totals, charts and tables.
#[component]
fn UsageReport(view: UsageView) -> impl IntoView {
    let empty = view.totals.requests == 0;
    let range = format!("{} 至 {}（北京时间）", view.from, view.to);
    view! {
        <div class="usage" data-testid="usage" data-days=view.days.to_string()>
            <p class="usage-scope">
                <strong data-testid="usage-scope">{view.scope_label}</strong>
                <span class="muted">{range}</span>
            </p>
            <Budgets budgets=view.budgets/>
            {if empty {
                view! {
                    <section class="card empty" data-testid="usage-empty">
                        <p class="empty-title">"这段时间还没有用量"</p>
                        <p class="muted">"在「流式AI」页发一条消息，这里就会出现花费、Token 和速度的图表。"</p>
                    </section>
                }.into_any()
            } else {
                view! {
                    <TotalsCard totals=view.totals/>
                    <div class="usage-charts">
                        {view.charts.into_iter().map(|chart| view! { <ChartBox chart/> }).collect_view()}
                    </div>
                }.into_any()
            }}
            {(!view.by_code.is_empty()).then(|| view! { <CodeTable rows=view.by_code/> })}
            <RecentTable rows=view.recent admin=view.admin/>
        </div>
    }
}

/// Remaining budget as meters: green, amber near the limit, red at it.
#[component]
fn Budgets(budgets: Vec<BudgetBar>) -> impl IntoView {
    (!budgets.is_empty()).then(|| {
        let bars = budgets
            .into_iter()
            .map(|b| {
                let text = format!(
                    "已用 ¥{} / 上限 ¥{}，剩余 ¥{}",
                    b.spent, b.limit, b.remaining
                );
                view! {
                    <div class="budget">
                        <span class="budget-label">{b.label.clone()}</span>
                        <meter
                            min="0"
                            max=b.max
                            value=b.value
                            low=b.max * 0.7
                            high=b.max * 0.9
                            optimum="0"
                            aria-label=b.label
                        >
                            {text.clone()}
                        </meter>
                        <span class="budget-text">{text}</span>
                    </div>
                }
            })
            .collect_view();
        view! {
            <section class="card budgets" aria-label="剩余额度" data-testid="usage-budgets">
                {bars}
            </section>
        }
    })
}

#[component]
fn TotalsCard(totals: Totals) -> impl IntoView {
    let requests = totals.requests.to_string();
    let problems = format!(
        "错误 {} · 中止 {} · 拒绝 {}",
        totals.errors, totals.stopped, totals.refused
    );
    view! {
        <section class="usage-totals" aria-label="合计">
            <div class="stat">
                <span class="stat-label">"请求"</span>
                <span class="stat-value" data-testid="usage-requests">{requests}</span>
                <span class="stat-note">{problems}</span>
            </div>
            <div class="stat">
                <span class="stat-label">"花费"</span>
                <span class="stat-value" data-testid="usage-cost">{format!("¥{}", totals.cost)}</span>
            </div>
            <div class="stat">
                <span class="stat-label">"输入 Token"</span>
                <span class="stat-value">{totals.prompt_tokens.to_string()}</span>
            </div>
            <div class="stat">
                <span class="stat-label">"输出 Token"</span>
                <span class="stat-value">{totals.completion_tokens.to_string()}</span>
            </div>
        </section>
    }
}

/// One chart in its card; the SVG comes from the server (see `charts::sanitize`).
#[component]
fn ChartBox(chart: Chart) -> impl IntoView {
    let body = if chart.svg.is_empty() {
        view! { <p class="muted chart-empty">"暂无数据"</p> }.into_any()
    } else {
        view! {
            <div class="chart-svg" role="img" aria-label=chart.summary.clone() inner_html=chart.svg></div>
        }
        .into_any()
    };
    view! {
        <figure class="card chart" data-testid=format!("chart-{}", chart.key)>
            <figcaption>{chart.title}</figcaption>
            {body}
            <p class="chart-summary muted">{chart.summary}</p>
        </figure>
    }
}

#[component]
fn CodeTable(rows: Vec<CodeRow>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|r| {
            view! {
                <tr>
                    <td class="nowrap">{r.name}</td>
                    <td class="num">{r.requests.to_string()}</td>
                    <td class="num">{r.errors.to_string()}</td>
                    <td class="num">{format!("{} / {}", r.prompt_tokens, r.completion_tokens)}</td>
                    <td class="num">{format!("¥{}", r.cost)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="card">
            <h3>"各访问码用量"</h3>
            <div class="table-scroll">
                <table class="usage-table" data-testid="usage-by-code">
                    <thead>
                        <tr>
                            <th scope="col">"访问码"</th>
                            <th scope="col" class="num">"请求"</th>
                            <th scope="col" class="num">"错误"</th>
                            <th scope="col" class="num">"Token 输入 / 输出"</th>
                            <th scope="col" class="num">"花费"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </section>
    }
}

#[component]
fn RecentTable(rows: Vec<RecentRow>, admin: bool) -> impl IntoView {
    if rows.is_empty() {
        return view! {
            <section class="card">
                <h3>"最近的请求"</h3>
                <p class="muted">"还没有请求记录。"</p>
            </section>
        }
        .into_any();
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            view! {
                <tr class=format!("outcome-{}", r.outcome_kind)>
                    <td class="nowrap">{r.time}</td>
                    {admin.then(|| view! { <td class="nowrap">{r.code.unwrap_or_default()}</td> })}
                    <td class="mono">{r.model}</td>
                    <td class="num">{format!("{} / {}", r.prompt_tokens, r.completion_tokens)}</td>
                    <td class="num">{format!("¥{}", r.cost)}</td>
                    <td class="num nowrap">{r.ttft}</td>
                    <td class="outcome">{r.outcome}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="card">
            <h3>"最近的请求"</h3>
            <div class="table-scroll">
                <table class="usage-table" data-testid="usage-recent">
                    <thead>
                        <tr>
                            <th scope="col">"时间（北京）"</th>
                            {admin.then(|| view! { <th scope="col">"访问码"</th> })}
                            <th scope="col">"模型"</th>
                            <th scope="col" class="num">"Token 输入 / 输出"</th>
                            <th scope="col" class="num">"费用"</th>
                            <th scope="col" class="num">"首字"</th>
                            <th scope="col">"结果"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </section>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_escaped_html_without_inline_styles() {
        let view = UsageView {
            scope_label: "访问码「<script>alert(1)</script>」的用量".into(),
            admin: true,
            days: 7,
            from: "2026-11-21".into(),
            to: "2026-11-27".into(),
            totals: Totals {
                requests: 2,
                cost: "0.3".into(),
                ..Totals::default()
            },
            charts: vec![Chart {
                key: "spend".into(),
                title: "每日花费".into(),
                summary: "a \"quoted\" summary".into(),
                svg: "<svg viewBox=\"0 0 1 1\"></svg>".into(),
            }],
            budgets: vec![BudgetBar {
                label: "今日额度".into(),
                spent: "1".into(),
                limit: "5".into(),
                remaining: "4".into(),
                value: 1.0,
                max: 5.0,
            }],
            by_code: Vec::new(),
            recent: vec![RecentRow {
                time: "11-27 14:03:05".into(),
                code: Some("<b>组</b>".into()),
                model: "m".into(),
                prompt_tokens: 1,
                completion_tokens: 2,
                cost: "0.1".into(),
                ttft: "—".into(),
                outcome: "完成".into(),
                outcome_kind: "ok".into(),
            }],
        };
        let html = render(view);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains(" style="), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("data-testid=\"chart-spend\""), "{html}");
        assert!(html.contains("<svg viewBox=\"0 0 1 1\"></svg>"), "{html}");
        assert!(html.contains("<meter"), "{html}");
        assert!(html.contains("¥0.3"), "{html}");
    }
}
