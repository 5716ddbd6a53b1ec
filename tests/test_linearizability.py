"""The linearizability checker on histories whose answer is known."""

from kubelab.chaos.linearizability import Op, check, check_register


def put(c, v, t0, t1, key="k"):
    return Op(c, key, "put", v, None, t0, t1)


def get(c, v, t0, t1, key="k"):
    return Op(c, key, "get", None, v, t0, t1)


def cas(c, old, new, ok, t0, t1, key="k"):
    return Op(c, key, "cas", (old, new), ok, t0, t1)


def test_sequential_history():
    assert check_register([put(0, "a", 0, 1), get(1, "a", 2, 3), put(0, "b", 4, 5),
                           get(1, "b", 6, 7)])


def test_stale_read_after_a_completed_write_is_not_linearizable():
    assert check_register([put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5)]) is False


def test_concurrent_operations_may_take_effect_in_either_order():
    # the read overlaps both writes: either value (or the initial None) is fine
    for seen in ("a", "b", None):
        assert check_register([put(0, "a", 0, 10), put(1, "b", 1, 9), get(2, seen, 2, 8)])
    assert check_register([put(0, "a", 0, 10), put(1, "b", 1, 9), get(2, "c", 2, 8)]) is False


def test_reads_must_agree_on_one_order():
    # two readers see the two concurrent writes in opposite orders: not linearizable
    h = [put(0, "a", 0, 10), put(1, "b", 0, 10),
         get(2, "a", 1, 2), get(2, "b", 3, 4), get(3, "b", 1, 2), get(3, "a", 3, 4)]
    assert check_register(h) is False


def test_compare_and_swap():
    assert check_register([put(0, "a", 0, 1), cas(1, "a", "b", True, 2, 3),
                           cas(2, "a", "c", False, 4, 5), get(0, "b", 6, 7)])
    # two CAS from the same value cannot both succeed
    assert check_register([put(0, "a", 0, 1), cas(1, "a", "b", True, 2, 5),
                           cas(2, "a", "c", True, 2, 5)]) is False


def test_unknown_outcome_may_or_may_not_have_happened():
    lost = put(0, "x", 0, None)  # timed out
    assert check_register([put(1, "a", 0, 1), lost, get(2, "x", 5, 6), get(2, "x", 7, 8)])
    assert check_register([put(1, "a", 0, 1), lost, get(2, "a", 5, 6)])
    # ... but once seen, it cannot be unseen
    assert check_register([put(1, "a", 0, 1), lost, get(2, "x", 5, 6),
                           get(2, "a", 7, 8)]) is False


def test_keys_are_checked_independently():
    res = check([put(0, "a", 0, 1, key="k1"), get(1, "a", 2, 3, key="k1"),
                 put(0, "b", 0, 1, key="k2"), get(1, None, 2, 3, key="k2")])
    assert res == {"k1": True, "k2": False}
