package io.blkstack.mem;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.invoke.MethodHandle;
import java.util.Locale;

/**
 * Binds the C library calls the JDK lacks (for the page arena's mapping, a file's holes) through
 * the foreign-function API, on Linux only. Every caller keeps a plain-JDK path for when a binding
 * is absent: another platform, or a JVM where the native linker cannot be used.
 */
public final class NativeCalls {

    private NativeCalls() {
    }

    /** Whether the calls may be bound here at all (their flags and numbers are Linux's). */
    public static boolean onLinux() {
        return System.getProperty("os.name", "").toLowerCase(Locale.ROOT).startsWith("linux");
    }

    /**
     * A handle on the C library's {@code name}, or null where it cannot be bound (not Linux, no
     * usable native linker, no such symbol).
     */
    public static MethodHandle libc(String name, FunctionDescriptor descriptor, Linker.Option... options) {
        if (!onLinux()) {
            return null;
        }
        try {
            Linker linker = Linker.nativeLinker();
            return linker.defaultLookup().find(name)
                    .map(symbol -> linker.downcallHandle(symbol, descriptor, options))
                    .orElse(null);
        } catch (RuntimeException | LinkageError e) {
            return null; // a restricted JVM or an unusual platform: the caller's plain-JDK path
        }
    }
}
