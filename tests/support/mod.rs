pub mod baton;
pub mod mock_smtp;
pub mod process;
