package io.blkstack.nbd;

import io.blkstack.mem.NativeCalls;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A send on a blocking socket that never waits: {@code sendmsg(2)} with {@code MSG_DONTWAIT},
 * through the foreign-function API, which the JDK lacks (its channel is blocking or non-blocking
 * as a whole, and the connection's reader must block on its reads). The connection's reader uses it
 * to send replies that are ready before it blocks for the next request (issue 16's noisy
 * neighbours: one hand-off less per request), and hands whatever the socket did not take to the
 * writer.
 *
 * <p><b>The descriptor.</b> The JDK does not expose a channel's descriptor; it is read once, while
 * the channel is open and owned by this connection, through {@code sun.nio.ch.SelChImpl}, which
 * the jar's manifest (and the test JVM) export to this code. The class sends on its own
 * {@code dup(2)} of it, never on the channel's number: the JDK may close the channel at any time
 * (a drain deadline), and a number closed there could be reused by the next accepted client, whose
 * stream would then get this connection's bytes. The duplicate is closed by {@link #close} once no
 * send is under way (a count, no lock: neither side ever waits for the other), so a send either
 * runs on this connection's socket or is refused.
 *
 * <p>Where any of it is unavailable (not Linux, no native access, the package not exported)
 * {@link #open} returns null and replies go through the writer only, as before.
 */
final class SendNow {

    private static final int MSG_DONTWAIT = 0x40;
    private static final int MSG_NOSIGNAL = 0x4000;
    private static final int EINTR = 4;
    private static final int EAGAIN = 11;
    /** Linux's {@code IOV_MAX}: the most buffers one {@code sendmsg} takes. */
    static final int IOV_MAX = 1024;

    /** {@code struct iovec}. */
    private static final StructLayout IOVEC = MemoryLayout.structLayout(
            ValueLayout.ADDRESS.withName("base"), ValueLayout.JAVA_LONG.withName("length"));
    /** {@code struct msghdr} on LP64 Linux. */
    private static final StructLayout MSGHDR = MemoryLayout.structLayout(
            ValueLayout.ADDRESS.withName("name"), ValueLayout.JAVA_INT.withName("namelen"),
            MemoryLayout.paddingLayout(4), ValueLayout.ADDRESS.withName("iov"),
            ValueLayout.JAVA_LONG.withName("iovlen"), ValueLayout.ADDRESS.withName("control"),
            ValueLayout.JAVA_LONG.withName("controllen"), ValueLayout.JAVA_INT.withName("flags"),
            MemoryLayout.paddingLayout(4));
    private static final VarHandle IOV_BASE = IOVEC.varHandle(MemoryLayout.PathElement.groupElement("base"));
    private static final VarHandle IOV_LENGTH = IOVEC.varHandle(MemoryLayout.PathElement.groupElement("length"));
    private static final VarHandle MSG_IOV = MSGHDR.varHandle(MemoryLayout.PathElement.groupElement("iov"));
    private static final VarHandle MSG_IOVLEN = MSGHDR.varHandle(MemoryLayout.PathElement.groupElement("iovlen"));

    private static final StructLayout ERRNO_STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = ERRNO_STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));

    /** The C calls, or null where they cannot be bound. */
    private record Libc(MethodHandle sendmsg, MethodHandle dup, MethodHandle close) {
    }

    private static final Libc LIBC = bind();

    /** Set in {@link #state} once {@link #close} was called; the low bits count sends under way. */
    private static final int CLOSED = 1 << 30;

    private final int fd;
    private final MemorySegment message;
    private final MemorySegment iovecs;
    private final MemorySegment errnoState;
    private final AtomicInteger state = new AtomicInteger();

    private SendNow(int fd) {
        this.fd = fd;
        Arena arena = Arena.ofAuto();
        this.message = arena.allocate(MSGHDR);
        this.iovecs = arena.allocate(IOVEC, IOV_MAX);
        this.errnoState = arena.allocate(ERRNO_STATE);
        MSG_IOV.set(message, 0L, iovecs);
    }

    private static Libc bind() {
        MethodHandle sendmsg = NativeCalls.libc("sendmsg", FunctionDescriptor.of(ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), Linker.Option.captureCallState("errno"));
        MethodHandle dup = NativeCalls.libc("dup", FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
        MethodHandle close = NativeCalls.libc("close", FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
        if (ValueLayout.ADDRESS.byteSize() != 8 || sendmsg == null || dup == null || close == null) {
            return null;
        }
        return new Libc(sendmsg, dup, close);
    }

    /**
     * Whether this JVM can send without waiting at all: the calls bound, 64-bit addresses (the
     * {@code msghdr} layout above is LP64's), and the descriptor readable.
     */
    static boolean available() {
        return LIBC != null && fdMethod() != null;
    }

    /** {@code SelChImpl.getFDVal}, or null where the package is not exported to this code. */
    private static Method fdMethod() {
        try {
            Method m = Class.forName("sun.nio.ch.SelChImpl").getMethod("getFDVal");
            return isExported(m) ? m : null;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    private static boolean isExported(Method m) {
        Module base = m.getDeclaringClass().getModule();
        return base.isExported(m.getDeclaringClass().getPackageName(), SendNow.class.getModule());
    }

    /**
     * A non-waiting sender on its own duplicate of {@code channel}'s descriptor, or null where that
     * is not possible here. The channel must be open; call once, while the connection owns it.
     */
    static SendNow open(SocketChannel channel) {
        Method fdVal = LIBC == null ? null : fdMethod();
        if (fdVal == null || !channel.isOpen()) {
            return null;
        }
        try {
            int fd = (int) fdVal.invoke(channel);
            int copy = (int) LIBC.dup().invokeExact(fd);
            if (copy < 0) {
                return null;
            }
            try {
                return new SendNow(copy);
            } catch (RuntimeException | Error e) {
                int ignored = (int) LIBC.close().invokeExact(copy);
                return null;
            }
        } catch (Throwable e) {
            return null; // an unusual channel class or JVM: the writer sends everything, as before
        }
    }

    /**
     * Sends from {@code srcs[offset..offset+length)} what the socket takes now, advancing each
     * buffer's position; the count sent (0 when the socket's buffer is full), or -1 when it cannot
     * (a buffer that is not direct, too many buffers, or this sender closed), the bytes untouched.
     */
    long send(ByteBuffer[] srcs, int offset, int length) throws IOException {
        if (length > IOV_MAX) {
            return -1;
        }
        for (int i = 0; i < length; i++) {
            if (!srcs[offset + i].isDirect()) {
                return -1;
            }
        }
        if (!enter()) {
            return -1;
        }
        long sent;
        try {
            for (int i = 0; i < length; i++) {
                ByteBuffer b = srcs[offset + i];
                MemorySegment at = MemorySegment.ofBuffer(b);
                IOV_BASE.set(iovecs, (long) i * IOVEC.byteSize(), at);
                IOV_LENGTH.set(iovecs, (long) i * IOVEC.byteSize(), (long) b.remaining());
            }
            MSG_IOVLEN.set(message, 0L, (long) length);
            while (true) {
                sent = (long) LIBC.sendmsg().invokeExact(errnoState, fd, message, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (sent >= 0) {
                    break;
                }
                int errno = (int) ERRNO.get(errnoState, 0L);
                if (errno == EAGAIN) {
                    return 0;
                }
                if (errno != EINTR) {
                    throw new IOException("sendmsg failed: errno " + errno);
                }
            }
        } catch (IOException e) {
            throw e;
        } catch (Throwable e) {
            throw new IOException("sendmsg could not be called", e); // the connection ends, as on a send error
        } finally {
            exit();
        }
        for (long left = sent; left > 0; offset++) {
            ByteBuffer b = srcs[offset];
            int k = (int) Math.min(b.remaining(), left);
            b.position(b.position() + k);
            left -= k;
        }
        return sent;
    }

    /** Refuses later sends and closes the duplicate now, or when the send under way ends. Never waits. */
    void close() {
        int before = state.getAndUpdate(s -> s | CLOSED);
        if (before == 0) {
            closeDescriptor();
        }
    }

    private boolean enter() {
        while (true) {
            int s = state.get();
            if ((s & CLOSED) != 0) {
                return false;
            }
            if (state.compareAndSet(s, s + 1)) {
                return true;
            }
        }
    }

    private void exit() {
        if (state.decrementAndGet() == CLOSED) {
            closeDescriptor();
        }
    }

    /**
     * Closes the duplicate. Never throws: it runs in the transport's close and after a send, where
     * a failure must not stop the connection from ending; Linux releases the descriptor even when
     * {@code close} reports an error, so there is nothing to retry.
     */
    private void closeDescriptor() {
        try {
            int ignored = (int) LIBC.close().invokeExact(fd);
        } catch (Throwable e) {
            // a native linker that worked for dup and sendmsg: not expected; nothing else to do
        }
    }

    /** The duplicate's number (for tests: whether it is still open). */
    int descriptor() {
        return fd;
    }

    /** Counts a send under way, as {@link #send} does around its call (for tests of {@link #close}). */
    boolean enterForTest() {
        return enter();
    }

    /** Ends what {@link #enterForTest} began. */
    void exitForTest() {
        exit();
    }

    @Override
    public String toString() {
        return "non-waiting send on descriptor " + fd;
    }
}
