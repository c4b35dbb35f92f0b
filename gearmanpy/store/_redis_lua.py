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
#:
#: Redis does not roll back a script that fails half way, so the script parses the whole batch
#: before its first write: a malformed batch changes nothing. Once parsing is done, a command
#: can fail only if a key under the prefix holds another type (written by someone else) or
#: Redis refuses writes for lack of memory (``maxmemory``); neither happens to a store that
#: owns its prefix on a server with memory to spare.
WRITE = """
local p = ARGV[1]
local ops = ARGV[2]
local order = p .. 'order'
local jp = p .. 'job:'
-- How many strings follow each op code.
local width = {a = 11, d = 1, r = 2, s = 4, b = 13, u = 12, x = 1, k = 14, y = 1, c = 13}
-- Parse the whole batch first: a malformed one is refused before anything is written.
local todo = {}
local pos, n = 1, #ops
while pos <= n do
  local op
  op, pos = struct.unpack('c1', ops, pos)
  if not width[op] then
    return redis.error_reply('bad operation code')
  end
  local v = {struct.unpack('>' .. string.rep('I4c0', width[op]), ops, pos)}
  pos = table.remove(v)
  table.insert(todo, {op, v})
end
local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
local start = seq
local claims = {}
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
for _, item in ipairs(todo) do
  local op, v = item[1], item[2]
  if op == 'a' then
    add(unpack(v))
  elseif op == 'd' then
    forget(jp .. v[1], order, v[1])
  elseif op == 'r' then
    if redis.call('EXISTS', jp .. v[1]) == 1 then
      redis.call('HSET', jp .. v[1], 'retries', v[2])
    end
  elseif op == 's' then
    if redis.call('EXISTS', jp .. v[1]) == 1 then
      redis.call('HSET', jp .. v[1], 'when', v[2], 'retries', v[3], 'error', v[4])
    end
  elseif op == 'b' then
    local dh = p .. 'dead:' .. v[1]
    forget(jp .. v[1], order, v[1])
    redis.call('DEL', dh)
    redis.call('HSET', dh, 'function', v[2], 'unique', v[3], 'priority', v[4], 'data', v[5],
      'when', v[6], 'retries', v[7], 'reducer', v[8], 'handle', v[9], 'submitted', v[10],
      'error', v[11], 'last_error', v[12], 'failed_at', v[13])
    redis.call('ZADD', p .. 'deadorder', nextseq(), v[1])
  elseif op == 'u' then
    forget(p .. 'dead:' .. v[1], p .. 'deadorder', v[1])
    add(unpack(v, 2))
  elseif op == 'x' then
    forget(p .. 'dead:' .. v[1], p .. 'deadorder', v[1])
  elseif op == 'k' then
    if v[1] == '1' then
      forget(jp .. v[2], order, v[2])
    end
    local rh = p .. 'result:' .. v[3]
    redis.call('DEL', rh)
    redis.call('HSET', rh, 'function', v[4], 'unique', v[5], 'outcome', v[6], 'data', v[7],
      'numerator', v[8], 'denominator', v[9], 'attempts', v[10], 'submitted', v[11],
      'started', v[12], 'finished', v[13], 'expires', v[14])
    redis.call('ZADD', p .. 'results', nextseq(), v[3])
  elseif op == 'y' then
    forget(p .. 'result:' .. v[1], p .. 'results', v[1])
  else  -- 'c': claim tick v[2] for name v[1] with the job v[3..13]
    local th = p .. 'tick:' .. v[1]
    local last = redis.call('HGET', th, 'tick')
    if not last or tonumber(v[2]) > tonumber(last) then
      redis.call('HSET', th, 'tick', v[2], 'key', v[3])
      add(unpack(v, 3))
      table.insert(claims, 1)
    else
      table.insert(claims, 0)
    end
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
