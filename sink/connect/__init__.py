"""Event Streams set-up: the Events v1 REST client, the plan, and its application."""
