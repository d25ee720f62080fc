//! The admin's command line, on the same database as the server (`DATABASE_URL`, or the
//! default SQLite file):
//!
//! ```text
//! streamai codes add --name 小王 [--daily-yuan 5] [--monthly-yuan 50] [--rpm 20]
//!                    [--concurrent 3] [--models m1,m2] [--expires-days 30] [--admin]
//! streamai codes list
//! streamai codes limit ID [the same limit options; a missing one is left as it is]
//! streamai codes revoke ID
//! ```
//!
//! A new code is printed once and stored only as its hash.

use std::process::ExitCode;

use crate::protocol::Yuan;
use crate::store::{unix_now, CodeInfo, Limits, NewCode, Store};

const USAGE: &str = "usage: streamai codes add --name NAME [--daily-yuan X] [--monthly-yuan X] \
[--rpm N] [--concurrent N] [--models a,b] [--expires-days N] [--admin]
       streamai codes list
       streamai codes limit ID [--daily-yuan X] [--monthly-yuan X] [--rpm N] [--concurrent N] \
[--models a,b] [--expires-days N]
       streamai codes revoke ID";

/// Runs one command; the exit code says whether it worked.
pub async fn main(args: &[String]) -> ExitCode {
    let store = match super::open_store().await {
        Ok(store) => store,
        Err(err) => return fail(&err.to_string()),
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["codes", "add", rest @ ..] => add(&store, rest).await,
        ["codes", "list"] => list(&store).await,
        ["codes", "limit", id, rest @ ..] => limit(&store, id, rest).await,
        ["codes", "revoke", id] => revoke(&store, id).await,
        _ => Err(USAGE.to_owned()),
    };
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

async fn add(store: &Store, args: &[&str]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let name = options.name.clone().ok_or("--name is required")?;
    let new = NewCode {
        name,
        admin: options.admin,
        limits: options.apply(&Limits::default()),
    };
    let (info, plaintext) = store
        .create_code(new, unix_now())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", describe(&info));
    println!("访问码（只显示这一次，请妥善转交）：\n{plaintext}");
    Ok(())
}

async fn list(store: &Store) -> Result<(), String> {
    let codes = store.list_codes().await.map_err(|e| e.to_string())?;
    if codes.is_empty() {
        println!("还没有访问码：streamai codes add --name 管理员");
    }
    for code in codes {
        println!("{}", describe(&code));
    }
    Ok(())
}

async fn limit(store: &Store, id: &str, args: &[&str]) -> Result<(), String> {
    let id = parse_id(id)?;
    let options = Options::parse(args)?;
    let current = store
        .code(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no code with id {id}"))?;
    let limits = options.apply(&current.limits);
    let info = store
        .update_limits(id, &limits)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", describe(&info));
    Ok(())
}

async fn revoke(store: &Store, id: &str) -> Result<(), String> {
    let info = store
        .revoke(parse_id(id)?, unix_now())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", describe(&info));
    Ok(())
}

fn parse_id(text: &str) -> Result<i64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a code id"))
}

/// One line per code: id, name, prefix, limits, state. Never the code.
fn describe(code: &CodeInfo) -> String {
    let yuan = |limit: Option<Yuan>| limit.map_or("不限".to_owned(), |y| format!("¥{y}"));
    let count = |limit: Option<u32>| limit.map_or("不限".to_owned(), |n| n.to_string());
    let state = match code.revoked_at {
        Some(_) => "已停用",
        None if code.is_expired(unix_now()) => "已过期",
        None => "有效",
    };
    format!(
        "#{} {} ({}…){} 每日 {} 每月 {} 每分钟 {} 并发 {} 模型 {} [{state}]",
        code.id,
        code.name,
        code.prefix,
        if code.admin { " 管理员" } else { "" },
        yuan(code.limits.daily),
        yuan(code.limits.monthly),
        count(code.limits.rpm),
        count(code.limits.concurrent),
        code.limits
            .models
            .as_ref()
            .map_or("全部".to_owned(), |m| m.join(",")),
    )
}

/// The options of `add` and `limit`; `None` leaves a limit as it is.
#[derive(Default)]
struct Options {
    name: Option<String>,
    admin: bool,
    daily: Option<Yuan>,
    monthly: Option<Yuan>,
    rpm: Option<u32>,
    concurrent: Option<u32>,
    models: Option<Vec<String>>,
    expires_days: Option<i64>,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if *flag == "--admin" {
                options.admin = true;
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = |what: &str| -> Result<u32, String> {
                value
                    .parse()
                    .map_err(|_| format!("{flag} {value:?}: {what}"))
            };
            let money =
                || Yuan::parse(value).ok_or_else(|| format!("{flag} {value:?}: an amount in yuan"));
            match *flag {
                "--name" => options.name = Some((*value).to_owned()),
                "--daily-yuan" => options.daily = Some(money()?),
                "--monthly-yuan" => options.monthly = Some(money()?),
                "--rpm" => options.rpm = Some(number("a whole number")?),
                "--concurrent" => options.concurrent = Some(number("a whole number")?),
                "--expires-days" => options.expires_days = Some(i64::from(number("days")?)),
                "--models" => {
                    let models = value.split(',').map(|m| m.trim().to_owned());
                    options.models = Some(models.filter(|m| !m.is_empty()).collect());
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    fn apply(&self, current: &Limits) -> Limits {
        Limits {
            daily: self.daily.or(current.daily),
            monthly: self.monthly.or(current.monthly),
            rpm: self.rpm.or(current.rpm),
            concurrent: self.concurrent.or(current.concurrent),
            models: self.models.clone().or_else(|| current.models.clone()),
            expires_at: self
                .expires_days
                .map(|days| unix_now() + days * 86_400)
                .or(current.expires_at),
        }
    }
}
