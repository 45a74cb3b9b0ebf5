//! The API conformance suite on the embedded default: SQLite and the
//! in-process session cache.

use crate::support;

use support::Backend;

crate::all_scenarios!(Backend::Embedded);
