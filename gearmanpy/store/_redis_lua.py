# -*- test-case-name: tests.test_store,tests.test_store_policy -*-
"""The Redis store's Lua scripts, and the packing of a batch of writes they read.

Every write of a batch goes to Redis in one ``EVAL`` of :data:`WRITE`, which runs atomically
(like ``MULTI``/``EXEC``), so the steps of one operation (a bury's removal from the queue and
its dead hash, a claim's tick and its job) and the whole batch commit together or not at all.
"""

from __future__ import annotations

import struct
from typing import Any

from gearmanpy.store._writer import (
    ADD,
    BURY,
    CLAIM,
    DONE,
    DROP_DEAD,
    DROP_RESULTS,
    KEEP_RESULT,
    RESCHEDULE,
    RETRIES,
    UNBURY,
)
from gearmanpy.store.interface import DeadJob, KeptResult, StoredJob

#: Apply a batch of writes. ARGV[1] is the key prefix, ARGV[2] the operations, packed by
#: :func:`pack`: an op code byte then length-prefixed (4-byte big-endian) strings. A *job* is
#: the 11 strings ``key function unique priority data when retries reducer handle submitted
#: error``; the ops are ``a job`` (add), ``d key`` (done), ``r key retries`` (set the retry
#: count, only if the job is still stored), ``s key when retries error`` (reschedule, likewise),
#: ``b job last_error failed_at`` (bury), ``u deadkey job`` (unbury), ``x key`` (drop a dead
#: job), ``k haskey key result`` (keep a result: the 12 strings of RESULT_FIELDS, handle first;
#: the queued job ``key`` is forgotten if ``haskey`` is ``1``), ``y handle`` (drop a result) and
#: ``c name tick job`` (claim a tick). Numbers travel as decimal strings, since Lua numbers are
#: doubles and ``when`` is 64-bit. Returns one 1 or 0 per claim, in order.
WRITE = """
local p = ARGV[1]
local ops = ARGV[2]
local order = p .. 'order'
local jp = p .. 'job:'
local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
local start = seq
local pos = 1
local n = #ops
local claims = {}
local function fmt(count)
  return '>' .. string.rep('I4c0', count)
end
local F1, F2, F3, F4 = fmt(1), fmt(2), fmt(3), fmt(4)
local FJOB, FDEAD, FRESULT = fmt(11), fmt(13), fmt(12)
local function nextseq()
  seq = seq + 1
  return string.format('%d', seq)
end
local function add(key, f, u, pr, d, w, r, rd, h, s, e)
  redis.call('HSET', jp .. key, 'function', f, 'unique', u, 'priority', pr, 'data', d,
    'when', w, 'retries', r, 'reducer', rd, 'handle', h, 'submitted', s, 'error', e)
  redis.call('ZADD', order, 'NX', nextseq(), key)
end
local function forget(hash, zset, member)
  redis.call('DEL', hash)
  redis.call('ZREM', zset, member)
end
local op, key, f, u, pr, d, w, r, rd, h, s, e, le, fa
while pos <= n do
  op, pos = struct.unpack('c1', ops, pos)
  if op == 'a' then
    key, f, u, pr, d, w, r, rd, h, s, e, pos = struct.unpack(FJOB, ops, pos)
    add(key, f, u, pr, d, w, r, rd, h, s, e)
  elseif op == 'd' then
    key, pos = struct.unpack(F1, ops, pos)
    forget(jp .. key, order, key)
  elseif op == 'r' or op == 's' then
    if op == 'r' then
      key, r, pos = struct.unpack(F2, ops, pos)
    else
      key, w, r, e, pos = struct.unpack(F4, ops, pos)
    end
    if redis.call('EXISTS', jp .. key) == 1 then
      if op == 'r' then
        redis.call('HSET', jp .. key, 'retries', r)
      else
        redis.call('HSET', jp .. key, 'when', w, 'retries', r, 'error', e)
      end
    end
  elseif op == 'b' then
    key, f, u, pr, d, w, r, rd, h, s, e, le, fa, pos = struct.unpack(FDEAD, ops, pos)
    forget(jp .. key, order, key)
    redis.call('DEL', p .. 'dead:' .. key)
    redis.call('HSET', p .. 'dead:' .. key, 'function', f, 'unique', u, 'priority', pr,
      'data', d, 'when', w, 'retries', r, 'reducer', rd, 'handle', h, 'submitted', s,
      'error', e, 'last_error', le, 'failed_at', fa)
    redis.call('ZADD', p .. 'deadorder', nextseq(), key)
  elseif op == 'u' then
    key, pos = struct.unpack(F1, ops, pos)
    forget(p .. 'dead:' .. key, p .. 'deadorder', key)
    key, f, u, pr, d, w, r, rd, h, s, e, pos = struct.unpack(FJOB, ops, pos)
    add(key, f, u, pr, d, w, r, rd, h, s, e)
  elseif op == 'x' then
    key, pos = struct.unpack(F1, ops, pos)
    forget(p .. 'dead:' .. key, p .. 'deadorder', key)
  elseif op == 'k' then
    local has, v = nil, {}
    has, key, pos = struct.unpack(F2, ops, pos)
    if has == '1' then
      forget(jp .. key, order, key)
    end
    v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], pos =
      struct.unpack(FRESULT, ops, pos)
    local rh = p .. 'result:' .. v[1]
    redis.call('DEL', rh)
    redis.call('HSET', rh, 'function', v[2], 'unique', v[3], 'outcome', v[4], 'data', v[5],
      'numerator', v[6], 'denominator', v[7], 'attempts', v[8], 'submitted', v[9],
      'started', v[10], 'finished', v[11], 'expires', v[12])
    redis.call('ZADD', p .. 'results', nextseq(), v[1])
  elseif op == 'y' then
    key, pos = struct.unpack(F1, ops, pos)
    forget(p .. 'result:' .. key, p .. 'results', key)
  elseif op == 'c' then
    local name, tick
    name, tick, pos = struct.unpack(F2, ops, pos)
    key, f, u, pr, d, w, r, rd, h, s, e, pos = struct.unpack(FJOB, ops, pos)
    local th = p .. 'tick:' .. name
    local last = redis.call('HMGET', th, 'tick', 'key')
    local claimed = not last[1] or tonumber(tick) > tonumber(last[1])
      or (tonumber(tick) == tonumber(last[1]) and key == last[2])
    if claimed then
      redis.call('HSET', th, 'tick', tick, 'key', key)
      add(key, f, u, pr, d, w, r, rd, h, s, e)
      table.insert(claims, 1)
    else
      table.insert(claims, 0)
    end
  else
    return redis.error_reply('bad operation code')
  end
end
if seq ~= start then
  redis.call('SET', p .. 'seq', string.format('%d', seq))
end
return claims
"""

#: Read one page of hashes in the order of a sorted set. ARGV = the sorted set's key, the
#: hashes' key prefix, first index, count, then the fields to read; each row is the member
#: then the fields (nil where missing). Returns the number of members seen and the rows.
READ = """
local first = tonumber(ARGV[3])
local keys = redis.call('ZRANGE', ARGV[1], first, first + tonumber(ARGV[4]) - 1)
local fields = {}
for i = 5, #ARGV do
  table.insert(fields, ARGV[i])
end
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', ARGV[2] .. key, unpack(fields))
  if v[1] then
    table.insert(out, {key, unpack(v)})
  end
end
return {#keys, out}
"""

#: A job hash's fields, in :data:`gearmanpy.store._rows.COLUMNS` order after the key.
JOB_FIELDS = (
    b"function",
    b"unique",
    b"priority",
    b"data",
    b"when",
    b"retries",
    b"reducer",
    b"handle",
    b"submitted",
    b"error",
)
#: A dead job hash's fields.
DEAD_FIELDS = (*JOB_FIELDS, b"last_error", b"failed_at")
#: A kept result hash's fields, in :data:`gearmanpy.store._rows.RESULT_COLUMNS` order after
#: the handle.
RESULT_FIELDS = (
    b"function",
    b"unique",
    b"outcome",
    b"data",
    b"numerator",
    b"denominator",
    b"attempts",
    b"submitted",
    b"started",
    b"finished",
    b"expires",
)


def pack(ops: list[tuple[str, tuple[Any, ...]]]) -> bytes:
    """Encode write operations for :data:`WRITE` (op code, then length-prefixed strings)."""
    parts: list[bytes] = []
    append = parts.append
    for op, args in ops:
        # Adds and dones, the hot path, are encoded here; the rest by _encoded.
        if op == ADD:
            encoded = [(b"a", job_fields(args[0]))]
        elif op == DONE:
            encoded = [(b"d", (encode_key(args[0]),))]
        else:
            encoded = _encoded(op, args)
        for code, fields in encoded:
            append(code)
            for field in fields:
                append(_LENGTH.pack(len(field)))
                append(field)
    return b"".join(parts)


def _encoded(op: str, args: tuple[Any, ...]) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """The script's ops (code and strings) for a write other than add or done: one each,
    but one per key or handle for a drop."""
    if op == RETRIES:
        return [(b"r", (encode_key(args[0]), b"%d" % args[1]))]
    if op == RESCHEDULE:
        key, when, retries, error = args
        return [(b"s", (encode_key(key), b"%d" % when, b"%d" % retries, error))]
    if op == BURY:
        dead: DeadJob = args[0]
        return [(b"b", (*job_fields(dead.job), dead.error, _float(dead.failed_at)))]
    if op == UNBURY:
        key, job = args
        return [(b"u", (encode_key(key), *job_fields(job)))]
    if op == DROP_DEAD:
        return [(b"x", (encode_key(key),)) for key in args[0]]
    if op == KEEP_RESULT:
        key, result = args
        has = (b"0", b"") if key is None else (b"1", encode_key(key))
        return [(b"k", (*has, *result_fields(result)))]
    if op == DROP_RESULTS:
        return [(b"y", (handle,)) for handle in args[0]]
    if op == CLAIM:
        name, tick, job = args
        return [(b"c", (encode_key(name), b"%d" % tick, *job_fields(job)))]
    raise ValueError(f"unknown store operation {op!r}")


def job_fields(job: StoredJob) -> tuple[bytes, ...]:
    """A job as the 11 strings of a packed job (its key, then :data:`JOB_FIELDS`)."""
    return (
        encode_key(job.key),
        job.function,
        job.unique,
        b"%d" % job.priority,
        job.data,
        b"%d" % job.when,
        b"%d" % job.retries,
        job.reducer,
        job.handle,
        _float(job.submitted_at),
        job.error,
    )


def result_fields(result: KeptResult) -> tuple[bytes, ...]:
    """A kept result as its handle, then :data:`RESULT_FIELDS`."""
    return (
        result.handle,
        result.function,
        result.unique,
        result.outcome.encode(),
        result.data,
        b"%d" % result.numerator,
        b"%d" % result.denominator,
        b"%d" % result.attempts,
        _float(result.submitted_at),
        _float(result.started_at),
        _float(result.finished_at),
        _float(result.expires_at),
    )


def _float(value: float) -> bytes:
    """A time as the shortest decimal that reads back as the same float."""
    return repr(float(value)).encode()


_LENGTH = struct.Struct(">I")


def encode_key(key: str) -> bytes:
    """A job key or recurring job name as bytes (they are the server's strings)."""
    return key.encode("utf-8", "surrogateescape")


def decode_key(key: bytes) -> str:
    """A job key read back from Redis, as the string :func:`encode_key` encoded."""
    return key.decode("utf-8", "surrogateescape")
