from nightowl.distill.parser import normalize_action, parse_action

VALID = ("go north", "take coin", "open door to kitchen", "look around")


def test_exact_and_prefix_chatter():
    assert parse_action("Action: go north.", VALID).action == "go north"
    assert parse_action("> Take Coin", VALID).action == "take coin"
    assert parse_action("  \n\nlook around\nextra line", VALID).action == "look around"


def test_contained_in_chatter_prefers_longest():
    r = parse_action("Sure! I think I should open door to kitchen now.", VALID)
    assert r.action == "open door to kitchen" and r.method == "contained"


def test_closest_valid_action():
    r = parse_action("go nroth", VALID)
    assert r.action == "go north" and r.method == "closest"


def test_failures_are_reported_not_raised():
    for raw in ["", "   ", "\n\n", "xyzzy plugh frobozz"]:
        r = parse_action(raw, VALID)
        assert r.action is None and r.method == "failed"


def test_free_text_without_valid_actions():
    r = parse_action("Let me go east, then north", None)
    assert r.method == "free" and r.action == "go east, then north"
    assert parse_action("x" * 5000, None).action == "x" * 200


def test_normalize():
    assert normalize_action("  Go   North. ") == "go north"
    assert normalize_action('"take coin!"') == "take coin"
