//! The deterministic simulator (coming with its issue): one seed decides the whole world.
