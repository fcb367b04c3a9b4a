"""Register, log in, rotate refresh tokens (with reuse detection), log out, edit the profile."""

from __future__ import annotations

from support import Api


async def test_register_then_login_then_me(api: Api) -> None:
    user = await api.register("alice")
    assert user["username"] == "alice" and user["email"] == "alice@example.com"
    assert user["role"] == "admin"  # the first account of a fresh installation
    assert (await api.register("bob"))["role"] == "broadcaster"  # the default role for everyone after

    tokens = await api.login("alice")
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    status, me, _ = await api.call("GET", "/api/me", token=tokens["access_token"])
    assert status == 200 and me["username"] == "alice"


async def test_login_by_email_and_usernames_are_case_insensitive(api: Api) -> None:
    await api.register("carol")
    status, _, _ = await api.call("POST", "/api/auth/login", {"username": "CAROL@example.com", "password": "correct horse"})
    assert status == 200
    status, body, _ = await api.call(
        "POST", "/api/auth/register", {"username": "Carol", "email": "c2@example.com", "password": "correct horse"}
    )
    assert status == 409 and body["errors"][0]["field"] == "username"
    status, body, _ = await api.call(
        "POST", "/api/auth/register", {"username": "a b", "email": "c3@example.com", "password": "correct horse"}
    )
    assert status == 422 and body["errors"][0]["field"] == "username"
    assert body["errors"][0]["message"].startswith("3 to 24 characters")


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    await api.register("dave")
    wrong = await api.call("POST", "/api/auth/login", {"username": "dave", "password": "wrong horse"})
    unknown = await api.call("POST", "/api/auth/login", {"username": "nobody", "password": "wrong horse"})
    assert wrong[0] == unknown[0] == 401
    assert wrong[1]["detail"] == unknown[1]["detail"]


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    await api.register("erin")
    first = await api.login("erin")
    status, second, _ = await api.call("POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert (await api.call("GET", "/api/me", token=second["access_token"]))[0] == 200

    # The spent token comes back: someone stole it. The whole session ends, the new tokens too.
    status, body, _ = await api.call("POST", "/api/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 401 and "already used" in body["detail"]
    assert (await api.call("POST", "/api/auth/refresh", {"refresh_token": second["refresh_token"]}))[0] == 401
    assert (await api.call("GET", "/api/me", token=second["access_token"]))[0] == 401

    # Other login sessions of the same user are unaffected.
    other = await api.login("erin")
    assert (await api.call("GET", "/api/me", token=other["access_token"]))[0] == 200


async def test_logout_ends_the_session(api: Api) -> None:
    await api.register("frank")
    tokens = await api.login("frank")
    status, _, _ = await api.call("POST", "/api/auth/logout", {"refresh_token": tokens["refresh_token"]})
    assert status == 204
    assert (await api.call("GET", "/api/me", token=tokens["access_token"]))[0] == 401
    assert (await api.call("POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]}))[0] == 401


async def test_access_tokens_expire_and_refresh_tokens_too(api: Api) -> None:
    await api.register("gina")
    tokens = await api.login("gina")
    api.clock.advance(901)
    status, body, headers = await api.call("GET", "/api/me", token=tokens["access_token"])
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, fresh, _ = await api.call("POST", "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert status == 200
    api.clock.advance(31 * 24 * 3600)
    assert (await api.call("POST", "/api/auth/refresh", {"refresh_token": fresh["refresh_token"]}))[0] == 401


async def test_tampered_and_foreign_tokens_are_refused(api: Api) -> None:
    _, token = await api.user()
    header, payload, signature = token.split(".")
    assert (await api.call("GET", "/api/me", token=f"{header}.{payload}.{signature[::-1]}"))[0] == 401
    from joserfc import jwt
    from joserfc.jwk import OctKey

    forged = jwt.encode({"alg": "HS256"}, {"iss": "tallylight", "sub": "1", "sid": "x", "role": "admin",
                                           "exp": int(api.clock()) + 60}, OctKey.import_key(b"k" * 40))
    assert (await api.call("GET", "/api/me", token=forged))[0] == 401
    assert (await api.call("GET", "/api/me", headers={"Authorization": "Basic Zm9vOmJhcg=="}))[0] == 401


async def test_profile_update_and_password_change(api: Api) -> None:
    name, token = await api.user()
    status, me, _ = await api.call("PATCH", "/api/me", {"display_name": "Héloïse ✨", "bio": "line one\nline two"}, token)
    assert status == 200 and me["display_name"] == "Héloïse ✨" and me["bio"] == "line one\nline two"

    status, body, _ = await api.call("PATCH", "/api/me", {"new_password": "another horse"}, token)
    assert status == 403 and body["errors"][0]["field"] == "current_password"
    status, _, _ = await api.call(
        "PATCH", "/api/me", {"current_password": "correct horse", "new_password": "another horse"}, token
    )
    assert status == 200
    assert (await api.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"}))[0] == 401
    await api.login(name, "another horse")


async def test_email_change_cannot_take_another_users_email(api: Api) -> None:
    first, _ = await api.user()
    _, token = await api.user()
    status, body, _ = await api.call(
        "PATCH", "/api/me", {"email": f"{first}@example.com", "current_password": "correct horse"}, token
    )
    assert status == 409
