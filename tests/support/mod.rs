pub mod mock_smtp;
