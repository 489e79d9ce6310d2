//! Transport between sites and the arbiter: framed messages and artifact streaming over TCP.
