//! Drivers: how lifeboat talks to a database (backups, restore, promote, fence, probe).
