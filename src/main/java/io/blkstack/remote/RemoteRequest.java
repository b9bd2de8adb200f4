package io.blkstack.remote;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;

/**
 * One command slot of a remote device: a command on the wire or waiting to go there. A bio takes
 * one slot, or one per connection if it has a flush phase (a flush is sent on every connection);
 * the first slot of the group is its leader and carries the bio. Slots are made once per device,
 * so the number of commands in flight is bounded by construction. Fields are guarded by the
 * device's lock, except what the sender and receiver own while the command is on their side.
 */
final class RemoteRequest {

    /** Where the command is. */
    enum State { FREE, QUEUED, SENDING, SENT }

    /** What the leader's bio still needs, in order. */
    enum Phase { PREFLUSH, DATA, POSTFLUSH, DONE }

    final int index;
    /** Raised on every reuse; the cookie carries it, so a stale reply cannot match a new command. */
    int generation;
    State state = State.FREE;

    // ---- the command ---------------------------------------------------------------------------
    int command;
    int commandFlags;
    long offset;
    int length;
    /** The connection it is queued or sent on. */
    int connection = -1;
    /** The leader of its group (itself for the leader). */
    RemoteRequest leader;
    /** A reply arrived (DONE) while the sender still wrote the payload; the sender finishes it. */
    boolean repliedWhileSending;
    /** The worst status its reply chunks reported. */
    BioStatus replyStatus = BioStatus.OK;

    // ---- leader only ---------------------------------------------------------------------------
    Bio bio;
    /** The group's slots; [0] is the leader. */
    RemoteRequest[] group;
    int groupSize;
    Phase phase;
    int partsLeft;
    BioStatus status = BioStatus.OK;
    long deadlineNanos;
    boolean preflush;
    boolean postflush;

    // ---- a BLOCK_STATUS query (the device's one query slot) ------------------------------------
    /** The allocation map's epoch when the query was sent. */
    long queryEpoch;
    /** Whether no write was in flight when it was sent (else its reply is not applied). */
    boolean queryClean;

    // ---- links (intrusive, so queues allocate nothing) -----------------------------------------
    RemoteRequest next;
    RemoteRequest prev;
    /** Link of a local list of leaders to complete after the lock is dropped. */
    RemoteRequest doneNext;

    RemoteRequest(int index, int groupMax) {
        this.index = index;
        this.group = new RemoteRequest[groupMax];
    }

    /** The cookie sent with the command: slot index and generation. */
    long cookie() {
        return ((long) generation << 32) | index;
    }

    @Override
    public String toString() {
        return "request " + index + "." + generation + " " + state + " cmd " + command + " @" + offset + "+" + length;
    }
}
