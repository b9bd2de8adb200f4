package io.blkstack;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Keeps {@code docs/architecture.md} true to the code: every class and every source file it names
 * in backticks exists under {@code src/main/java}, so a rename or a split that leaves the document
 * behind fails here, and the README cites that document rather than a design document that is not
 * in the repository.
 *
 * <p>What counts as a name: an inline code span that is a class name ({@code Mempool}), a nested
 * or qualified one ({@code Kernel.Builder}, {@code io.blkstack.kernel.PolicySwitch}),
 * either followed by a member ({@code Bio.split}, {@code Submit.submitBio()}: the class is
 * checked), or a path ending in {@code .java} ({@code nbd/NbdServer.java}: a file whose path under
 * {@code src/main/java} ends with it; a path starting {@code src/} is taken from the repository
 * root). A JDK class is named with its package ({@code java.nio.channels.FileChannel}). Spans with spaces or other characters (commands, table
 * lines, YAML) and names without a lower-case letter ({@code MEM_RECLAIM}, {@code NOIO}) are not
 * names. Fenced code blocks are skipped.
 */
class ArchitectureDocTest {

    private static final Path ROOT = Path.of(System.getProperty("basedir", "."));
    private static final Path MAIN = ROOT.resolve("src/main/java");

    /** An inline code span, possibly wrapped over lines (fenced blocks are removed first). */
    private static final Pattern CODE_SPAN = Pattern.compile("`([^`]+)`");
    /**
     * Optional package, one or more type segments (each with a lower-case letter), optional member:
     * a method or field ({@code .split}, {@code #map()}) or a constant ({@code .SUBMITTED}).
     */
    private static final Pattern CLASS_NAME = Pattern.compile("((?:[a-z][a-z0-9]*\\.)*)"
            + "([A-Z][A-Z0-9]*[a-z][A-Za-z0-9]*(?:\\.[A-Z][A-Z0-9]*[a-z][A-Za-z0-9]*)*)"
            + "(?:[.#](?:[a-z][A-Za-z0-9]*(?:\\(\\))?|[A-Z][A-Z0-9_]*))?");
    private static final Pattern JAVA_PATH = Pattern.compile("[A-Za-z0-9_./-]+\\.java");
    /** A type declared in a source file (top-level or nested). */
    private static final Pattern DECLARATION = Pattern.compile("\\b(?:class|interface|enum|record)\\s+([A-Z][A-Za-z0-9]*)");

    /** What the main sources declare: file paths (with '/'), and each type name with the files declaring it. */
    record Sources(Set<String> paths, Map<String, Set<String>> declaredIn) {

        static Sources scan(Path mainRoot) {
            Set<String> paths = new HashSet<>();
            Map<String, Set<String>> declaredIn = new HashMap<>();
            try (Stream<Path> files = Files.walk(mainRoot)) {
                for (Path file : (Iterable<Path>) files.filter(p -> p.toString().endsWith(".java"))::iterator) {
                    String path = mainRoot.relativize(file).toString().replace('\\', '/');
                    paths.add(path);
                    Matcher m = DECLARATION.matcher(Files.readString(file));
                    while (m.find()) {
                        declaredIn.computeIfAbsent(m.group(1), k -> new HashSet<>()).add(path);
                    }
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return new Sources(paths, declaredIn);
        }

        /** Whether a file whose path ends with {@code suffix} (at a '/' boundary) exists. */
        boolean hasFile(String suffix) {
            return paths.stream().anyMatch(p -> p.equals(suffix) || p.endsWith("/" + suffix));
        }

        /** Whether {@code packagePrefix} (dotted, possibly empty) + {@code typePath} (Outer.Inner) is declared. */
        boolean hasType(String packagePrefix, String typePath) {
            String[] types = typePath.split("\\.");
            String outerFile = packagePrefix.replace('.', '/') + types[0] + ".java";
            if (types.length == 1) {
                if (!packagePrefix.isEmpty()) {
                    return hasFile(outerFile);
                }
                return declaredIn.containsKey(types[0]);
            }
            // Outer.Inner: a file named for the outer type (or declaring it) that declares every inner name.
            Set<String> candidates = new HashSet<>(declaredIn.getOrDefault(types[0], Set.of()));
            candidates.removeIf(p -> !packagePrefix.isEmpty() && !p.endsWith(outerFile));
            for (int i = 1; i < types.length; i++) {
                candidates.retainAll(declaredIn.getOrDefault(types[i], Set.of()));
            }
            return !candidates.isEmpty();
        }
    }

    /** The names a markdown text claims (see the class comment), in order. */
    static List<String> namedClassesAndFiles(String markdown) {
        StringBuilder prose = new StringBuilder();
        boolean fenced = false;
        for (String line : markdown.split("\n", -1)) {
            if (line.strip().startsWith("```")) {
                fenced = !fenced;
                continue;
            }
            if (!fenced) {
                prose.append(line).append('\n');
            }
        }
        List<String> names = new ArrayList<>();
        Matcher m = CODE_SPAN.matcher(prose);
        while (m.find()) {
            if (m.group(1).contains("\n\n")) {
                continue; // not a span: code spans do not cross paragraphs
            }
            String span = m.group(1).strip().replaceAll("\\s+", " ");
            if (JAVA_PATH.matcher(span).matches()) {
                names.add(span);
                continue;
            }
            Matcher c = CLASS_NAME.matcher(span);
            if (c.matches()) {
                names.add(span);
            }
        }
        return names;
    }

    /** The names among {@code names} that the sources do not have. */
    static List<String> missing(List<String> names, Sources sources) {
        List<String> missing = new ArrayList<>();
        for (String name : names) {
            if (JAVA_PATH.matcher(name).matches()) {
                boolean exists = name.startsWith("src/") ? Files.isRegularFile(ROOT.resolve(name)) : sources.hasFile(name);
                if (!exists) {
                    missing.add(name);
                }
                continue;
            }
            Matcher c = CLASS_NAME.matcher(name);
            boolean exists = c.matches() && (c.group(1).startsWith("java.")
                    ? jdkClassExists(c.group(1) + c.group(2))
                    : sources.hasType(c.group(1), c.group(2)));
            if (!exists) {
                missing.add(name);
            }
        }
        return missing;
    }

    /** Whether a JDK class ({@code java.nio.channels.FileChannel}, nested with dots) exists. */
    private static boolean jdkClassExists(String qualifiedName) {
        String binary = qualifiedName;
        while (true) {
            try {
                Class.forName(binary, false, ClassLoader.getPlatformClassLoader());
                return true;
            } catch (ClassNotFoundException e) {
                int dot = binary.lastIndexOf('.');
                if (dot < 0 || !Character.isUpperCase(binary.charAt(binary.lastIndexOf('.', dot - 1) + 1))) {
                    return false;
                }
                binary = binary.substring(0, dot) + '$' + binary.substring(dot + 1); // Outer.Inner -> Outer$Inner
            }
        }
    }

    @Test
    void everyClassAndFileTheArchitectureDocumentNamesExists() throws IOException {
        String doc = Files.readString(ROOT.resolve("docs/architecture.md"));
        List<String> names = namedClassesAndFiles(doc);
        // Not vacuous: the document walks the data path and the rules through the code.
        assertTrue(names.size() >= 40, "only " + names.size() + " class or file names found: " + names);
        List<String> missing = missing(names, Sources.scan(MAIN));
        assertEquals(List.of(), missing, "docs/architecture.md names classes or files that are not under src/main/java");
    }

    @Test
    void theCheckCatchesNamesThatDoNotExist() {
        Sources sources = Sources.scan(MAIN);
        String sample = """
                The `Mempool` and `Kernel.Builder` exist, so do `io.blkstack.kernel.PolicySwitch`, `MapResult.SUBMITTED`,
                `Bio.split`, `Submit.submitBio()`, `dm/mirror/MirrorTarget.java`, `src/test/java/io/blkstack/ArchitectureDocTest.java`
                and `java.nio.channels.FileChannel`; `MEM_RECLAIM`, `NOIO` and `blkstack serve --config x.yaml` are not
                names. But `NoSuchPool`, `Kernel.NoSuchBuilder`, `io.blkstack.mem.PolicySwitch`, `dm/NoSuchTarget.java`,
                `src/main/java/Mempool.java`, `java.nio.NoSuchChannel` and `FileChannel` are missing.
                ```
                `InsideAFence` is not read.
                ```
                """;
        List<String> names = namedClassesAndFiles(sample);
        List<String> missing = List.of("NoSuchPool", "Kernel.NoSuchBuilder", "io.blkstack.mem.PolicySwitch",
                "dm/NoSuchTarget.java", "src/main/java/Mempool.java", "java.nio.NoSuchChannel", "FileChannel");
        List<String> expected = new ArrayList<>(List.of("Mempool", "Kernel.Builder",
                "io.blkstack.kernel.PolicySwitch", "MapResult.SUBMITTED", "Bio.split", "Submit.submitBio()", "dm/mirror/MirrorTarget.java",
                "src/test/java/io/blkstack/ArchitectureDocTest.java", "java.nio.channels.FileChannel"));
        expected.addAll(missing);
        assertEquals(expected, names);
        assertEquals(missing, missing(names, sources));
    }

    @Test
    void theReadmeCitesTheArchitectureDocumentNotDesignSections() throws IOException {
        String readme = Files.readString(ROOT.resolve("README.md"));
        assertTrue(readme.contains("docs/architecture.md"), "README.md does not point to docs/architecture.md");
        assertFalse(readme.contains("DESIGN.md"), "README.md cites DESIGN.md, which is not in the repository");
    }
}
