//! What a plugin declares in `on_load`: options, hooks, alarm backends, imperial monitors.

use crate::alarms::{self, Alarm};
use crate::emperor::{self, ImperialMonitor};
use crate::hooks;
use crate::options::{ListSetting, OptionDef, Setting};
use std::fmt::Display;
use std::str::FromStr;

/// Handed to [`Plugin::on_load`](crate::Plugin::on_load). Hooks, alarms and monitors are
/// registered with uWSGI at once; options are handed over when `on_load` returns, just before
/// uWSGI rebuilds its option table.
pub struct Registry {
    pub(crate) options: Vec<OptionDef>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry { options: Vec::new() }
    }

    /// `name = value`, parsed with `T::from_str`; a bad value stops the instance with a message
    /// naming the option.
    pub fn option<T>(&mut self, name: &str, help: &str, setting: &'static Setting<T>) -> &mut Self
    where
        T: FromStr + Clone + Send + Sync + 'static,
        T::Err: Display,
    {
        self.options.push(OptionDef::typed(name, help, setting));
        self
    }

    /// A repeatable `name = value`; every occurrence is kept, in order.
    pub fn list_option<T>(&mut self, name: &str, help: &str, setting: &'static ListSetting<T>) -> &mut Self
    where
        T: FromStr + Clone + Send + Sync + 'static,
        T::Err: Display,
    {
        self.options.push(OptionDef::list(name, help, setting));
        self
    }

    /// A boolean `name` / `name = true` option.
    pub fn flag(&mut self, name: &str, help: &str, setting: &'static Setting<bool>) -> &mut Self {
        self.options.push(OptionDef::flag(name, help, setting));
        self
    }

    /// `name = value` that runs `apply` when uWSGI applies it, in config order (every
    /// occurrence); an `Err` stops the instance with a message naming the option. `apply` may
    /// add options with [`crate::config::add`].
    pub fn action(
        &mut self,
        name: &str,
        help: &str,
        apply: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.options.push(OptionDef::action(name, help, Box::new(apply)));
        self
    }

    /// `hook-<phase> = name:arg`. An `Err` fails the hook (fatal in uWSGI's fatal phases).
    pub fn hook(&mut self, name: &str, run: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) -> &mut Self {
        hooks::register(name, Box::new(run));
        self
    }

    /// `alarm = INSTANCE name:arg`: `build(instance, arg)` makes the instance's [`Alarm`].
    pub fn alarm(
        &mut self,
        name: &str,
        build: impl Fn(&str, &str) -> Result<Box<dyn Alarm>, String> + Send + Sync + 'static,
    ) -> &mut Self {
        alarms::register(name, Box::new(build));
        self
    }

    /// `emperor = scheme://...`: `build(full_arg)` makes the monitor, inside the Emperor.
    pub fn imperial_monitor(
        &mut self,
        scheme: &str,
        build: impl Fn(&str) -> Result<Box<dyn ImperialMonitor>, String> + Send + Sync + 'static,
    ) -> &mut Self {
        emperor::register(scheme, Box::new(build));
        self
    }
}
