"""The node agent (`vimha agent`): heartbeats on every network plane; process supervision,
BMC health and instances come with the rest of issue 3."""
