//! Shared test set-up: the app state from the real Cargo.toml and Leptos.toml.

use std::collections::HashMap;

use streamai::llm::LlmConfig;
use streamai::server::AppState;

/// An app state whose environment is exactly `vars` (the process env is not read).
pub fn state(vars: &[(&str, &str)]) -> AppState {
    let conf = leptos::config::get_configuration(Some("Cargo.toml"))
        .expect("Cargo.toml has [package.metadata.leptos]");
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = std::fs::read_to_string("Leptos.toml").expect("Leptos.toml is readable");
    let llm = LlmConfig::from_parts(&settings, &env).expect("test configuration is valid");
    AppState::new(conf.leptos_options, llm)
}
