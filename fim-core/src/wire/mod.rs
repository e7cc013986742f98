//! What the sinks put on the wire, from an event or its ECS document: syslog messages and
//! their framing, CEF lines, Elasticsearch bulk bodies and their answers, Splunk HEC
//! bodies and their answers. Pure: the sinks in `fim-userspace` do the sending.

pub mod cef;
pub mod elastic;
pub mod splunk;
pub mod syslog;
