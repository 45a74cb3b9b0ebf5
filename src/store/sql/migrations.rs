//! The schema migrations of both databases, compiled into the binary so a
//! deployed `holdfast` needs no migrations folder beside it. Each step is
//! listed once, with its text for either database.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

struct Step {
    version: i64,
    description: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

const STEPS: [Step; 8] = [
    Step {
        version: 1,
        description: "init",
        postgres: include_str!("../../../migrations/postgres/0001_init.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0001_init.sql"),
    },
    Step {
        version: 2,
        description: "session roles",
        postgres: include_str!("../../../migrations/postgres/0002_session_roles.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0002_session_roles.sql"),
    },
    Step {
        version: 3,
        description: "key schedule",
        postgres: include_str!("../../../migrations/postgres/0003_key_schedule.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0003_key_schedule.sql"),
    },
    Step {
        version: 4,
        description: "access",
        postgres: include_str!("../../../migrations/postgres/0004_access.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0004_access.sql"),
    },
    Step {
        version: 5,
        description: "security version",
        postgres: include_str!("../../../migrations/postgres/0005_security_version.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0005_security_version.sql"),
    },
    Step {
        version: 6,
        description: "password normalization",
        postgres: include_str!("../../../migrations/postgres/0006_password_normalization.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0006_password_normalization.sql"),
    },
    Step {
        version: 7,
        description: "session generation",
        postgres: include_str!("../../../migrations/postgres/0007_session_generation.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0007_session_generation.sql"),
    },
    Step {
        version: 8,
        description: "audit filters",
        postgres: include_str!("../../../migrations/postgres/0008_audit_filters.sql"),
        sqlite: include_str!("../../../migrations/sqlite/0008_audit_filters.sql"),
    },
];

pub fn postgres() -> Migrator {
    migrator(|step| step.postgres)
}

pub fn sqlite() -> Migrator {
    migrator(|step| step.sqlite)
}

fn migrator(sql: fn(&Step) -> &'static str) -> Migrator {
    Migrator::with_migrations(
        STEPS
            .iter()
            .map(|step| {
                Migration::new(
                    step.version,
                    step.description.into(),
                    MigrationType::Simple,
                    sql(step).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod every_file {
    use super::STEPS;

    /// A migration file not listed as a step is never applied, and nothing
    /// else would say so (found when 0008 was written and not listed).
    #[test]
    fn every_migration_file_is_a_step() {
        for database in ["postgres", "sqlite"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(database);
            let mut versions: Vec<i64> = std::fs::read_dir(&dir)
                .expect("migrations folder")
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
                })
                .collect();
            versions.sort_unstable();
            let steps: Vec<i64> = STEPS.iter().map(|s| s.version).collect();
            assert_eq!(versions, steps, "{database}: files against steps");
        }
    }
}
