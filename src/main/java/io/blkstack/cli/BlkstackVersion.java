package io.blkstack.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;

import picocli.CommandLine.IVersionProvider;

/**
 * The version {@code --version} prints: the project version that Maven filters into
 * {@code blkstack-version.properties}, plus the Java runtime it runs on.
 */
public final class BlkstackVersion implements IVersionProvider {

    /** The classpath resource Maven filters at build time. */
    static final String RESOURCE = "/blkstack-version.properties";

    @Override
    public String[] getVersion() {
        return new String[] {
            "blkstack " + projectVersion(),
            "Java " + Runtime.version() + " (" + System.getProperty("java.vendor") + ")"
        };
    }

    /**
     * The project version, or {@code unknown} when running from classes that Maven did not
     * build (the resource is missing or was not filtered).
     */
    public static String projectVersion() {
        try (InputStream in = BlkstackVersion.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                return "unknown";
            }
            Properties properties = new Properties();
            properties.load(in);
            String version = properties.getProperty("version", "").strip();
            if (version.isEmpty() || version.startsWith("${")) {
                return "unknown";
            }
            return version;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + RESOURCE, e);
        }
    }
}
