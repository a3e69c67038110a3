//! The A/B boot state as plain data, with RAUC's GRUB semantics, and every decision on it.
//!
//! The bootloader environment holds `ORDER` (space-separated bootnames, most preferred
//! first) and per bootname `<bn>_OK` and `<bn>_TRY` (`"0"`/`"1"`). At boot, GRUB picks
//! the first bootname in `ORDER` with `OK=1` and `TRY=0` and sets its `TRY=1` before
//! booting it; userspace commits a good boot by resetting `TRY=0` ([`AbState::mark_good`]).
//!
//! Reading is deliberately conservative: a missing or garbage `<bn>_OK` counts as not ok
//! (only `"1"` is ok) and a missing or garbage `<bn>_TRY` counts as tried (only `"0"` is
//! untried), so a damaged environment never makes a slot look bootable. Writing goes
//! through [`AbState::changed_vars`], which emits only variables whose meaning changed, so
//! reading a missing variable conservatively never writes that guess back.

use std::collections::BTreeMap;

/// Name of the variable holding the boot order.
pub const ORDER_VAR: &str = "ORDER";

/// The name of the `OK` variable of `bootname`.
pub fn ok_var(bootname: &str) -> String {
    format!("{bootname}_OK")
}

/// The name of the `TRY` variable of `bootname`.
pub fn try_var(bootname: &str) -> String {
    format!("{bootname}_TRY")
}

/// How the bootloader sees one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotBootState {
    /// `OK=1`, `TRY=0`: bootable and committed.
    Good,
    /// `OK=0`: not to be booted.
    Bad,
    /// `OK=1`, `TRY=1`: picked for a trial boot that has not been committed (or failed).
    Trying,
}

impl SlotBootState {
    /// The name in JSON and text (`good`, `bad`, `trying`).
    pub fn as_str(self) -> &'static str {
        match self {
            SlotBootState::Good => "good",
            SlotBootState::Bad => "bad",
            SlotBootState::Trying => "trying",
        }
    }
}

impl std::fmt::Display for SlotBootState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ORDER` plus the `OK`/`TRY` flags of every known bootname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbState {
    /// Bootnames in boot preference order, without duplicates.
    pub order: Vec<String>,
    /// `<bn>_OK == 1` per bootname.
    pub ok: BTreeMap<String, bool>,
    /// `<bn>_TRY == 1` per bootname (a trial boot was started and not committed).
    pub tried: BTreeMap<String, bool>,
}

fn flag(v: bool) -> String {
    if v { "1" } else { "0" }.to_string()
}

impl AbState {
    /// Reads the state from environment variables (later duplicates win).
    ///
    /// Flags are read for every configured bootname and every bootname in `ORDER`.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
        bootnames: &[String],
    ) -> AbState {
        let vars: BTreeMap<&str, &str> = vars.into_iter().collect();
        let mut order: Vec<String> = Vec::new();
        for bn in vars
            .get(ORDER_VAR)
            .copied()
            .unwrap_or("")
            .split_whitespace()
        {
            if !order.iter().any(|o| o == bn) {
                order.push(bn.to_string());
            }
        }
        let mut state = AbState {
            order,
            ..AbState::default()
        };
        let names: Vec<String> = bootnames
            .iter()
            .chain(state.order.iter())
            .cloned()
            .collect();
        for bn in names {
            let ok = vars.get(ok_var(&bn).as_str()) == Some(&"1");
            let tried = vars.get(try_var(&bn).as_str()) != Some(&"0");
            state.ok.insert(bn.clone(), ok);
            state.tried.insert(bn, tried);
        }
        state
    }

    /// Every variable of the state: `ORDER`, then `<bn>_OK` and `<bn>_TRY` by bootname.
    pub fn to_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![(ORDER_VAR.to_string(), self.order.join(" "))];
        for (bn, ok) in &self.ok {
            vars.push((ok_var(bn), flag(*ok)));
            vars.push((try_var(bn), flag(self.is_tried(bn))));
        }
        vars
    }

    /// The variables to write to turn `before` into `self`: only those whose value differs.
    pub fn changed_vars(&self, before: &AbState) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        if self.order != before.order {
            vars.push((ORDER_VAR.to_string(), self.order.join(" ")));
        }
        for (bn, ok) in &self.ok {
            if before.ok.get(bn) != Some(ok) {
                vars.push((ok_var(bn), flag(*ok)));
            }
        }
        for (bn, tried) in &self.tried {
            if before.tried.get(bn) != Some(tried) {
                vars.push((try_var(bn), flag(*tried)));
            }
        }
        vars
    }

    fn is_ok(&self, bn: &str) -> bool {
        self.ok.get(bn).copied().unwrap_or(false)
    }

    fn is_tried(&self, bn: &str) -> bool {
        self.tried.get(bn).copied().unwrap_or(true)
    }

    /// The slot GRUB will boot next: the first bootname in `ORDER` that is ok and not tried.
    pub fn primary(&self) -> Option<&str> {
        self.order
            .iter()
            .map(String::as_str)
            .find(|bn| self.is_ok(bn) && !self.is_tried(bn))
    }

    /// How the bootloader sees `bn` (an unknown bootname is [`SlotBootState::Bad`]).
    pub fn state(&self, bn: &str) -> SlotBootState {
        match (self.is_ok(bn), self.is_tried(bn)) {
            (false, _) => SlotBootState::Bad,
            (true, true) => SlotBootState::Trying,
            (true, false) => SlotBootState::Good,
        }
    }

    /// Commits `bn` as good: `OK=1`, `TRY=0`. `ORDER` is unchanged.
    pub fn mark_good(&mut self, bn: &str) {
        self.ok.insert(bn.to_string(), true);
        self.tried.insert(bn.to_string(), false);
    }

    /// Marks `bn` as not bootable: `OK=0`, `TRY=0`. `ORDER` is unchanged.
    pub fn mark_bad(&mut self, bn: &str) {
        self.ok.insert(bn.to_string(), false);
        self.tried.insert(bn.to_string(), false);
    }

    /// Makes `bn` the next slot to boot: `OK=1`, `TRY=0`, and `ORDER` becomes `bn`, then
    /// the other configured bootnames in config order, as RAUC's GRUB backend rebuilds it
    /// (bootnames in the old `ORDER` that the config does not know are dropped).
    pub fn mark_active(&mut self, bn: &str, all_bootnames: &[String]) {
        let mut order = vec![bn.to_string()];
        for name in all_bootnames {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
        self.order = order;
        self.mark_good(bn);
        for name in all_bootnames {
            if !self.ok.contains_key(name) {
                self.ok.insert(name.clone(), false);
            }
            if !self.tried.contains_key(name) {
                self.tried.insert(name.clone(), true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn state(vars: &[(&str, &str)], bootnames: &[&str]) -> AbState {
        AbState::from_vars(vars.iter().copied(), &names(bootnames))
    }

    fn ab_fresh() -> AbState {
        state(
            &[
                ("ORDER", "A B"),
                ("A_OK", "1"),
                ("A_TRY", "0"),
                ("B_OK", "1"),
                ("B_TRY", "0"),
            ],
            &["A", "B"],
        )
    }

    #[test]
    fn reads_vars() {
        let s = ab_fresh();
        assert_eq!(s.order, names(&["A", "B"]));
        assert_eq!(s.primary(), Some("A"));
        assert_eq!(s.state("A"), SlotBootState::Good);
        assert_eq!(s.state("B"), SlotBootState::Good);
    }

    #[test]
    fn missing_and_garbage_are_conservative() {
        let s = state(
            &[("ORDER", "A  B A"), ("A_OK", "yes"), ("B_OK", "1")],
            &["A", "B", "C"],
        );
        assert_eq!(s.order, names(&["A", "B"]), "duplicates dropped");
        assert_eq!(s.state("A"), SlotBootState::Bad);
        assert_eq!(
            s.state("B"),
            SlotBootState::Trying,
            "missing TRY counts as tried"
        );
        assert_eq!(s.state("C"), SlotBootState::Bad);
        assert_eq!(s.state("Z"), SlotBootState::Bad);
        assert_eq!(s.primary(), None);
        let s = state(&[], &["A", "B"]);
        assert!(s.order.is_empty());
        assert_eq!(s.primary(), None);
        let s = state(&[("ORDER", "A"), ("A_OK", "1"), ("A_TRY", "2")], &["A"]);
        assert_eq!(s.state("A"), SlotBootState::Trying);
    }

    #[test]
    fn later_duplicates_win() {
        let s = state(
            &[("A_OK", "0"), ("A_OK", "1"), ("A_TRY", "0"), ("ORDER", "A")],
            &["A"],
        );
        assert_eq!(s.primary(), Some("A"));
    }

    #[test]
    fn primary_skips_tried_and_bad() {
        let s = state(
            &[
                ("ORDER", "A B"),
                ("A_OK", "1"),
                ("A_TRY", "1"),
                ("B_OK", "1"),
                ("B_TRY", "0"),
            ],
            &["A", "B"],
        );
        assert_eq!(s.state("A"), SlotBootState::Trying);
        assert_eq!(s.primary(), Some("B"));
        let s = state(
            &[
                ("ORDER", "A B"),
                ("A_OK", "0"),
                ("A_TRY", "0"),
                ("B_OK", "1"),
                ("B_TRY", "0"),
            ],
            &["A", "B"],
        );
        assert_eq!(s.primary(), Some("B"));
    }

    #[test]
    fn ab_update_cycle() {
        // Running A; install into B and activate it.
        let mut s = ab_fresh();
        s.mark_active("B", &names(&["A", "B"]));
        assert_eq!(s.order, names(&["B", "A"]));
        assert_eq!(s.primary(), Some("B"));
        // GRUB boots B and sets B_TRY=1.
        s.tried.insert("B".into(), true);
        assert_eq!(s.state("B"), SlotBootState::Trying);
        // If B never commits, the next boot falls back to A.
        assert_eq!(s.primary(), Some("A"));
        // B commits.
        s.mark_good("B");
        assert_eq!(s.state("B"), SlotBootState::Good);
        assert_eq!(s.primary(), Some("B"));
        // B later judged bad: A again, ORDER unchanged.
        s.mark_bad("B");
        assert_eq!(s.order, names(&["B", "A"]));
        assert_eq!(s.state("B"), SlotBootState::Bad);
        assert_eq!(s.primary(), Some("A"));
    }

    #[test]
    fn abc_mark_active_rebuilds_order_from_config_like_rauc() {
        let all = names(&["A", "B", "C"]);
        let mut s = state(
            &[
                ("ORDER", "B C A"),
                ("A_OK", "1"),
                ("A_TRY", "0"),
                ("B_OK", "1"),
                ("B_TRY", "0"),
                ("C_OK", "0"),
                ("C_TRY", "0"),
            ],
            &["A", "B", "C"],
        );
        s.mark_active("C", &all);
        assert_eq!(s.order, names(&["C", "A", "B"]));
        assert_eq!(s.primary(), Some("C"));
        s.mark_active("A", &all);
        assert_eq!(s.order, names(&["A", "B", "C"]));
    }

    #[test]
    fn mark_active_drops_unknown_and_adds_missing_configured_names() {
        let all = names(&["A", "B", "C"]);
        let mut s = state(&[("ORDER", "X B")], &["A", "B", "C"]);
        s.mark_active("C", &all);
        assert_eq!(s.order, names(&["C", "A", "B"]));
        assert_eq!(s.state("C"), SlotBootState::Good);
        assert_eq!(s.state("A"), SlotBootState::Bad);
        let mut s = AbState::default();
        s.mark_active("B", &names(&["A", "B"]));
        assert_eq!(s.order, names(&["B", "A"]));
        assert_eq!(s.primary(), Some("B"));
    }

    #[test]
    fn to_vars_round_trips() {
        let mut s = ab_fresh();
        s.mark_active("B", &names(&["A", "B"]));
        s.mark_bad("A");
        let vars = s.to_vars();
        assert_eq!(
            vars,
            vec![
                ("ORDER".to_string(), "B A".to_string()),
                ("A_OK".to_string(), "0".to_string()),
                ("A_TRY".to_string(), "0".to_string()),
                ("B_OK".to_string(), "1".to_string()),
                ("B_TRY".to_string(), "0".to_string()),
            ]
        );
        let back = AbState::from_vars(
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &names(&["A", "B"]),
        );
        assert_eq!(back, s);
    }

    #[test]
    fn changed_vars_writes_only_changes() {
        let before = ab_fresh();
        let mut after = before.clone();
        after.mark_good("A");
        assert!(after.changed_vars(&before).is_empty());
        after.mark_active("B", &names(&["A", "B"]));
        assert_eq!(
            after.changed_vars(&before),
            vec![("ORDER".to_string(), "B A".to_string())]
        );
    }

    #[test]
    fn conservative_reading_is_not_written_back() {
        // GRUB's script defaults a missing TRY to 0, so A boots; marking B bad must not
        // write the conservative guess A_TRY=1.
        let before = state(
            &[("ORDER", "A B"), ("A_OK", "1"), ("B_OK", "1")],
            &["A", "B"],
        );
        let mut after = before.clone();
        after.mark_bad("B");
        assert_eq!(
            after.changed_vars(&before),
            vec![
                ("B_OK".to_string(), "0".to_string()),
                ("B_TRY".to_string(), "0".to_string())
            ]
        );
    }
}
