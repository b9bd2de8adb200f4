package io.blkstack.architecture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Kernel;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * DESIGN.md section 2: one {@code Kernel} is one independent block layer, so no class of the main
 * code may keep state in a static field. A static field passes only if it is final and its value
 * is deeply immutable: a primitive, a string, an enum constant, an immutable JDK value, an
 * unmodifiable collection of such values, or an object of ours whose fields are all final and
 * hold such values (records, stateless lambdas). Arrays, atomics, mutable collections, locks and
 * throwables count as mutable, even when the field itself is final.
 */
class NoMutableStaticStateTest {

    /**
     * The only static fields allowed to refer to mutable state, each with the reason. Keep this
     * list short: a new entry needs the same kind of reason.
     */
    private static final Map<String, String> ALLOWED = Map.of(
            "io.blkstack.block.LockedFile.HELD",
            "mirrors the operating system's file locks, which belong to the process, not to one kernel",
            "io.blkstack.kernel.Task.CURRENT",
            "the key of the thread's own task field; the state lives in each thread, not in the static");

    /** JDK value classes known to be immutable. */
    private static final Set<Class<?>> JDK_IMMUTABLE = Set.of(String.class, Boolean.class, Character.class,
            Byte.class, Short.class, Integer.class, Long.class, Float.class, Double.class,
            java.math.BigInteger.class, java.math.BigDecimal.class, Class.class, java.util.regex.Pattern.class,
            java.time.Duration.class, java.time.Instant.class, java.util.UUID.class, java.util.Locale.class,
            java.util.Optional.class, java.util.OptionalInt.class, java.util.OptionalLong.class);

    // Proves the rule over every class compiled from src/main/java: it loads each class, reads each
    // static field's value and walks the value's object graph; any field that is not final, or whose
    // value graph holds something mutable, is listed with the path to the mutable part.
    @Test
    void mainCodeDeclaresNoMutableStaticField() throws Exception {
        List<String> offenders = new ArrayList<>();
        List<String> classes = mainClassNames();
        assertTrue(classes.size() > 100, "found only " + classes.size() + " main classes: wrong class directory?");
        for (String name : classes) {
            Class<?> c = Class.forName(name, true, Kernel.class.getClassLoader());
            for (Field f : c.getDeclaredFields()) {
                if (!Modifier.isStatic(f.getModifiers()) || f.isSynthetic()) {
                    continue;
                }
                String id = name + "." + f.getName();
                if (ALLOWED.containsKey(id)) {
                    continue;
                }
                if (!Modifier.isFinal(f.getModifiers())) {
                    offenders.add(id + ": not final");
                    continue;
                }
                if (f.getType().isPrimitive()) {
                    continue;
                }
                f.setAccessible(true);
                String why = mutablePart(f.get(null), f.getName(), Collections.newSetFromMap(new IdentityHashMap<>()));
                if (why != null) {
                    offenders.add(id + ": " + why);
                }
            }
        }
        assertEquals(List.of(), offenders, "static fields holding mutable state");
    }

    // Proves the checker itself tells mutable from immutable values, so the test above can fail.
    @Test
    void checkerSeesMutableValues() {
        assertEquals("x: array", mutablePart(new int[1], "x", newSeen()));
        assertEquals(null, mutablePart(new byte[0], "x", newSeen()), "an empty array holds nothing to change");
        assertTrue(mutablePart(new java.util.concurrent.atomic.AtomicLong(), "x", newSeen()).contains("AtomicLong"));
        assertTrue(mutablePart(new java.util.HashMap<>(), "x", newSeen()).contains("HashMap"));
        assertTrue(mutablePart(List.of(new int[1]), "x", newSeen()).contains("array"));
        assertTrue(mutablePart(new Holder(new java.util.ArrayList<>()), "x", newSeen()).contains("ArrayList"));
        assertTrue(mutablePart(new Box(), "x", newSeen()).contains("not final"));
        assertEquals(null, mutablePart(List.of("a", 1, java.time.Duration.ZERO), "x", newSeen()));
        assertEquals(null, mutablePart(new Holder(Map.of("k", "v")), "x", newSeen()));
        Runnable stateless = () -> { };
        assertEquals(null, mutablePart(stateless, "x", newSeen()));
    }

    private record Holder(Object value) {
    }

    private static final class Box {
        @SuppressWarnings("unused")
        private int value;
    }

    private static Set<Object> newSeen() {
        return Collections.newSetFromMap(new IdentityHashMap<>());
    }

    /** Where {@code value}'s object graph holds mutable state (a path and the reason), or null if nowhere. */
    static String mutablePart(Object value, String path, Set<Object> seen) {
        if (value == null || !seen.add(value)) {
            return null;
        }
        Class<?> c = value.getClass();
        if (c.isArray()) {
            // An empty array has nothing to change (a sentinel compared by identity).
            return java.lang.reflect.Array.getLength(value) == 0 ? null : path + ": array";
        }
        if (value instanceof Enum<?> && c.getPackageName().startsWith("java.")) {
            return null; // the JDK's enum constants hold no state of ours (PosixFilePermission, TimeUnit)
        }
        if (JDK_IMMUTABLE.contains(c) || value instanceof java.lang.invoke.VarHandle
                || value instanceof java.lang.invoke.MethodHandle || value instanceof java.lang.foreign.MemoryLayout || value instanceof java.time.temporal.TemporalAccessor
                && c.getPackageName().equals("java.time")) {
            return null;
        }
        if (value instanceof Collection<?> || value instanceof Map<?, ?>) {
            String name = c.getName();
            boolean unmodifiable = name.startsWith("java.util.ImmutableCollections$")
                    || name.startsWith("java.util.Collections$Unmodifiable") || name.startsWith("java.util.Collections$Empty")
                    || name.startsWith("java.util.Collections$Singleton");
            if (!unmodifiable) {
                return path + ": modifiable " + name;
            }
            Collection<?> elements = value instanceof Map<?, ?> m ? m.entrySet() : (Collection<?>) value;
            int i = 0;
            for (Object e : elements) {
                Object[] parts = e instanceof Map.Entry<?, ?> entry ? new Object[] {entry.getKey(), entry.getValue()}
                        : new Object[] {e};
                for (Object part : parts) {
                    String why = mutablePart(part, path + "[" + i + "]", seen);
                    if (why != null) {
                        return why;
                    }
                }
                i++;
            }
            return null;
        }
        if (!c.getName().startsWith("io.blkstack.")) {
            return path + ": " + c.getName() + " is not known to be immutable";
        }
        for (Class<?> k = c; k != null && k != Object.class && k != Enum.class && k != Record.class; k = k.getSuperclass()) {
            if (!k.getName().startsWith("io.blkstack.")) {
                return path + ": extends " + k.getName() + ", not known to be immutable";
            }
            for (Field f : k.getDeclaredFields()) {
                if (Modifier.isStatic(f.getModifiers())) {
                    continue;
                }
                if (!Modifier.isFinal(f.getModifiers())) {
                    return path + "." + f.getName() + ": not final (in " + k.getName() + ")";
                }
                if (f.getType().isPrimitive()) {
                    continue;
                }
                f.setAccessible(true);
                Object fieldValue;
                try {
                    fieldValue = f.get(value);
                } catch (IllegalAccessException e) {
                    throw new IllegalStateException(e);
                }
                String why = mutablePart(fieldValue, path + "." + f.getName(), seen);
                if (why != null) {
                    return why;
                }
            }
        }
        return null;
    }

    /** The binary names of every class compiled from src/main/java. */
    private static List<String> mainClassNames() throws IOException, URISyntaxException {
        Path root = Path.of(Kernel.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        try (Stream<Path> files = Files.walk(root)) {
            return files.filter(p -> p.toString().endsWith(".class"))
                    .map(p -> root.relativize(p).toString())
                    .map(s -> s.substring(0, s.length() - ".class".length()).replace('/', '.'))
                    .filter(s -> !s.equals("module-info") && !s.endsWith("package-info"))
                    .sorted()
                    .toList();
        }
    }
}
