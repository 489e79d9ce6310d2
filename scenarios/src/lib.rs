//! Scenario files (TOML): topology, schedules, a timeline of faults and expectations.
