//! The polynomial method (MATH.md section 2): attention and its gradients in
//! O(n r d d_v) time through exp(S) ~ P(S) = U V^T, with a certified degree choice.

pub mod core;
pub mod features;
pub mod lowrank;
pub mod polynomial;
