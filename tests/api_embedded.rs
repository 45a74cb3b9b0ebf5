//! The API conformance suite on the embedded default: SQLite and the
//! in-process session cache.

mod support;

use support::Backend;

all_scenarios!(Backend::Embedded);
