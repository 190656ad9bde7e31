"""Accounts: the Twilio accounts one sink serves, from the accounts file and the settings."""
