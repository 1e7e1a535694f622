"""Identity and authorization: SMART scopes, tokens, users, audit."""
