//! Progress bars with an ETA, drawn on stderr only when stderr is a terminal: in CI logs and
//! redirected output a bar is hidden (it still counts, so code never has to ask).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta}";

/// A bar counting to `len`, labelled `label`.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(ProgressStyle::with_template(TEMPLATE).expect("the template is valid"));
    bar.set_prefix(label.to_string());
    bar
}
