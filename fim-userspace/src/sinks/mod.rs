//! Where events go. Each sink is a module with its running task.

pub mod stdout;
