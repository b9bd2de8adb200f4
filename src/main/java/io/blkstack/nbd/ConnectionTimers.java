package io.blkstack.nbd;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Timer;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A connection's phase and its four deadlines: the handshake timeout, the idle timeout, the reply
 * timeout and the request timeout ({@link NbdConnection} says what each protects against).
 *
 * <p>All are kernel timers whose callbacks only flip the phase and shut the transport down, which
 * never blocks (rule 2 of DESIGN.md section 1). The handshake timer is replaced by the idle timer
 * when the client enters transmission; the idle and the reply timer are each re-armed from their
 * own callback, so a request costs at most a clock read ({@link #noteActivity}), never a timer. The
 * reader notes when it waits for a request ({@link #awaitingRequest}); the writer notes when it is
 * sending and after every chunk it moved ({@link #beginSending}, {@link #noteSendProgress}).
 *
 * <p>The request timer looks at the requests in flight, each stamped at its header or its current
 * window ({@link NbdRequest#timedSinceNanos}: a clock read per request, only under a request
 * timeout), and re-arms for the oldest one's deadline; a request past it is lost and the connection
 * cut ({@link NbdConnection#requestTimedOut}). It goes on after the cut, so that every request that
 * stays past its deadline is lost too and the writer can end.
 *
 * <p>The phase moves once out of {@code HANDSHAKE}, and at most once out of {@code TRANSMISSION};
 * {@link #stop} ends every timer for good (no callback re-arms after it).
 */
final class ConnectionTimers {

    /** Phases of a connection. */
    static final int HANDSHAKE = 0;
    static final int TRANSMISSION = 1;
    static final int HANDSHAKE_TIMED_OUT = 2;
    static final int IDLE_TIMED_OUT = 3;
    static final int REPLY_TIMED_OUT = 4;
    static final int REQUEST_TIMED_OUT = 5;
    static final int PAYLOAD_TIMED_OUT = 6;
    /** The shortest re-arm of the idle and reply timers, so a clock at the deadline cannot make them spin. */
    private static final long RECHECK_NANOS_MIN = 1_000_000L;

    private final NbdConnection connection;
    private final NbdServer server;
    private final Kernel kernel;
    private final String name;
    private final AtomicInteger phase = new AtomicInteger(HANDSHAKE);
    private final SpinLock timerLock;
    /** Index in {@link #timers} of the handshake or idle timer, ... */
    private static final int PHASE_TIMER = 0;
    /** ... of the reply timer (only with a reply timeout), ... */
    private static final int REPLY_TIMER = 1;
    /** ... and of the request timer (only with a request timeout). */
    private static final int REQUEST_TIMER = 2;
    /** The pending timer of each kind, or null; guarded by {@link #timerLock}. */
    private final Timer[] timers = new Timer[3];
    private boolean timersStopped;
    private final long idleTimeoutNanos;
    private volatile long lastActivityNanos;
    private volatile boolean awaitingRequest;
    private final long replyTimeoutNanos;
    private final String replyTimerName;
    private final Runnable replyTimerCallback = this::replyTimerFired;
    private final long requestTimeoutNanos;
    private final String requestTimerName;
    private final Runnable requestTimerCallback = this::requestTimerFired;
    /** What the request timeout cut for, for the log at the connection's end (set once, by the timer). */
    private volatile String timedOutRequest;
    /** Whether the reader is receiving a request's payload (between its first and last byte). */
    private volatile boolean readerReceiving;
    /** When the reader last received payload bytes, or began to wait for them; written before {@link #readerReceiving}. */
    private volatile long lastReceiveProgressNanos;
    /** Whether the writer is sending replies (between taking a batch and the end of its writes). */
    private volatile boolean writerSending;
    /** When the writer last moved a chunk of replies, or began sending; written before {@link #writerSending}. */
    private volatile long lastSendProgressNanos;

    ConnectionTimers(NbdConnection connection, NbdServer server, String name) {
        this.connection = connection;
        this.server = server;
        this.kernel = server.kernel();
        this.name = name;
        this.timerLock = new SpinLock(name + " timers");
        this.idleTimeoutNanos = server.options().idleTimeoutNanos();
        this.replyTimeoutNanos = server.options().replyTimeoutNanos();
        this.replyTimerName = name + " reply timeout";
        this.requestTimeoutNanos = server.options().requestTimeoutNanos();
        this.requestTimerName = name + " request timeout";
    }

    /** The current phase. */
    int phase() {
        return phase.get();
    }

    /** Arms the handshake timer: past it, a client still haggling is cut off. */
    void startHandshake() {
        long timeout = server.options().handshakeTimeoutNanos();
        arm(PHASE_TIMER, timeout, name + " handshake timeout", () -> {
            if (phase.compareAndSet(HANDSHAKE, HANDSHAKE_TIMED_OUT)) {
                connection.shutdownInput();
                connection.shutdownOutput(); // a client that stopped reading must not hold a handshake write either
            }
        });
    }

    /**
     * Moves to transmission and replaces the handshake timer with the idle timer (if the server has
     * an idle timeout); false if the handshake timer fired first.
     */
    boolean enterTransmission() {
        if (!phase.compareAndSet(HANDSHAKE, TRANSMISSION)) {
            return false;
        }
        cancel(PHASE_TIMER);
        if (idleTimeoutNanos > 0) {
            lastActivityNanos = kernel.scheduler().nanoTime();
            arm(PHASE_TIMER, idleTimeoutNanos, name + " idle timeout", this::idleTimerFired);
        }
        if (requestTimeoutNanos > 0) {
            arm(REQUEST_TIMER, requestTimeoutNanos, requestTimerName, requestTimerCallback);
        }
        return true;
    }

    /** A request's {@link NbdRequest#timedSinceNanos}: now under a request timeout, else UNTIMED (no clock read). */
    long requestStamp() {
        return requestTimeoutNanos > 0 ? kernel.scheduler().nanoTime() : NbdRequest.UNTIMED;
    }

    /**
     * The request timer: loses every request that has not been done within the request
     * timeout and cuts the connection for the first ({@link NbdConnection#requestTimedOut}); then
     * re-arms for the oldest deadline left (or a whole timeout if none waits). Never blocks.
     */
    private void requestTimerFired() {
        long now = kernel.scheduler().nanoTime();
        long cutoff = now - requestTimeoutNanos;
        NbdRequest oldest = connection.oldestTimed();
        long since = oldest == null ? NbdRequest.UNTIMED : oldest.timedSinceNanos;
        if (since != NbdRequest.UNTIMED && since <= cutoff) {
            // Described before anything is lost: once a request is lost the connection may end at
            // once, and its end logs this (a request that comes back meanwhile is named all the same).
            String what = connection.describeRequest(oldest);
            if (phase.get() == TRANSMISSION) {
                timedOutRequest = what;
            }
            boolean cut = phase.compareAndSet(TRANSMISSION, REQUEST_TIMED_OUT);
            boolean lostAny = false;
            NbdRequest overdue;
            while ((overdue = connection.loseOverdue(cutoff)) != null) {
                connection.requestTimedOut(overdue);
                lostAny = true;
            }
            if (cut && !lostAny) {
                connection.closeSocket(); // it came back just now, past its deadline all the same
            }
            oldest = connection.oldestTimed();
            since = oldest == null ? NbdRequest.UNTIMED : oldest.timedSinceNanos;
        }
        long next = since == NbdRequest.UNTIMED ? requestTimeoutNanos : since + requestTimeoutNanos - now;
        arm(REQUEST_TIMER, Math.max(next, RECHECK_NANOS_MIN), requestTimerName, requestTimerCallback);
    }

    /**
     * The idle timer: ends the connection if the reader waits for a request with no other request
     * in flight (it holds one slot for the header it waits for) and nothing happened for the idle
     * timeout; otherwise re-arms for when that could first be true.
     */
    private void idleTimerFired() {
        long now = kernel.scheduler().nanoTime();
        boolean quiet = awaitingRequest && connection.inFlight() == 1;
        long idleNanos = now - lastActivityNanos;
        if (quiet && idleNanos >= idleTimeoutNanos) {
            if (phase.compareAndSet(TRANSMISSION, IDLE_TIMED_OUT)) {
                connection.shutdownInput();
            }
            return;
        }
        long next = quiet ? idleTimeoutNanos - idleNanos : idleTimeoutNanos;
        arm(PHASE_TIMER, Math.max(next, RECHECK_NANOS_MIN), name + " idle timeout", this::idleTimerFired);
    }

    /** Starts the reply timer, if the server has a reply timeout (the writer's first act). */
    void startReplyTimer() {
        if (replyTimeoutNanos > 0) {
            arm(REPLY_TIMER, replyTimeoutNanos, replyTimerName, replyTimerCallback);
        }
    }

    /**
     * The reply timer: cuts the connection if the writer has been sending and moved no chunk for
     * the reply timeout, or the reader has been receiving a request's payload and got no byte of it
     * for as long (a client that stalls mid-payload holds that request's budget pages, and a few
     * such clients would hold every other client's writes); otherwise re-arms for when that could
     * first be true. Only flips the
     * phase and closes the transport, neither of which blocks (rule 2 of DESIGN.md section 1).
     */
    private void replyTimerFired() {
        long now = kernel.scheduler().nanoTime();
        long sendStalled = writerSending ? now - lastSendProgressNanos : 0;
        long receiveStalled = readerReceiving ? now - lastReceiveProgressNanos : 0;
        if (sendStalled >= replyTimeoutNanos || receiveStalled >= replyTimeoutNanos) {
            if (phase.compareAndSet(TRANSMISSION, sendStalled >= replyTimeoutNanos ? REPLY_TIMED_OUT : PAYLOAD_TIMED_OUT)) {
                connection.closeSocket();
            }
            return;
        }
        arm(REPLY_TIMER, Math.max(replyTimeoutNanos - Math.max(sendStalled, receiveStalled), RECHECK_NANOS_MIN),
                replyTimerName, replyTimerCallback);
    }

    /** Sets the timer of kind {@code which} (replacing the pending one's slot), unless the connection has ended. */
    private void arm(int which, long delayNanos, String what, Runnable callback) {
        timerLock.lock();
        try {
            if (!timersStopped) {
                timers[which] = kernel.scheduler().addTimer(delayNanos, what, callback);
            }
        } finally {
            timerLock.unlock();
        }
    }

    /** Cancels the pending timer of kind {@code which}, if any. */
    private void cancel(int which) {
        Timer t;
        timerLock.lock();
        try {
            t = timers[which];
            timers[which] = null;
        } finally {
            timerLock.unlock();
        }
        if (t != null) {
            t.cancel();
        }
    }

    /** Stops every timer for good (the connection has ended: nothing re-arms). */
    void stop() {
        timerLock.lock();
        try {
            timersStopped = true;
        } finally {
            timerLock.unlock();
        }
        for (int which = 0; which < timers.length; which++) {
            cancel(which);
        }
    }

    /** Logs why the server cut this connection off in the handshake or for idleness, if a timer did. */
    void logTimeout(String peer) {
        switch (phase.get()) {
            case HANDSHAKE_TIMED_OUT -> server.log(name + " (" + peer + "): disconnected: handshake not completed within "
                    + NbdServer.formatNanos(server.options().handshakeTimeoutNanos()));
            case IDLE_TIMED_OUT -> server.log(name + " (" + peer + "): disconnected: idle for "
                    + NbdServer.formatNanos(idleTimeoutNanos) + " (idle timeout)");
            default -> {
            }
        }
    }

    /**
     * Logs a cut for unread replies, or for a request its device kept. Called at the connection's
     * end, not by the reader or the timer: the reader may have ended (a client that shut its
     * output) before the timer cut the writer, and a timer callback must not block on a log.
     */
    void logReplyTimeout(String peer) {
        if (phase.get() == REPLY_TIMED_OUT) {
            server.log(name + " (" + peer + "): disconnected: replies not read for "
                    + NbdServer.formatNanos(replyTimeoutNanos) + " (reply timeout)");
        } else if (phase.get() == PAYLOAD_TIMED_OUT) {
            server.log(name + " (" + peer + "): disconnected: a request's payload stalled for "
                    + NbdServer.formatNanos(replyTimeoutNanos) + " (reply timeout)");
        } else if (phase.get() == REQUEST_TIMED_OUT) {
            server.log(name + " (" + peer + "): disconnected: " + timedOutRequest + " not done within "
                    + NbdServer.formatNanos(requestTimeoutNanos) + " (request timeout)");
        }
    }

    /** Notes whether the reader waits for a request header (for the idle timer). */
    void awaitingRequest(boolean value) {
        awaitingRequest = value;
    }

    /** Notes traffic for the idle timer (only when there is one: a clock read per call). */
    void noteActivity() {
        if (idleTimeoutNanos > 0) {
            lastActivityNanos = kernel.scheduler().nanoTime();
        }
    }

    /** The writer starts sending a batch: progress counts from now. */
    void beginSending() {
        noteSendProgress();
        writerSending = true;
    }

    /** The writer is done with a batch (sent, or failed). */
    void endSending() {
        writerSending = false;
    }

    /** The reader starts or stops receiving a request's payload: the reply timeout watches it meanwhile. */
    void receiving(boolean value) {
        if (value) {
            noteReceiveProgress();
        }
        readerReceiving = value;
    }

    /** Notes that payload bytes arrived (only with a reply timeout: a clock read per read). */
    void noteReceiveProgress() {
        if (replyTimeoutNanos > 0) {
            lastReceiveProgressNanos = kernel.scheduler().nanoTime();
        }
    }

    /** Notes that the writer moved replies (only with a reply timeout: a clock read per chunk). */
    void noteSendProgress() {
        if (replyTimeoutNanos > 0) {
            lastSendProgressNanos = kernel.scheduler().nanoTime();
        }
    }
}
