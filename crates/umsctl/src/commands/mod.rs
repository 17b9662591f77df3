//! The command handlers, one file per command area, and how they print a response.

pub mod admins;
pub mod assignments;
pub mod audit;
pub mod bundle;
pub mod check;
pub mod devices;
pub mod files;
pub mod folders;
pub mod jobs;
pub mod login;
pub mod network;
pub mod profiles;
pub mod release;
pub mod settings;
pub mod swp;
pub mod token;
pub mod update;
pub mod update_mode;

use serde::Serialize;

/// Prints a response as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON with `--json`, else the text made by `human`.
pub fn show<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_json(value)
    } else {
        let text = human(value);
        if text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
        Ok(())
    }
}
