"""Who is calling: passwords, tokens, stream keys, roles, rate limits and OpenID Connect sign-in."""
