package io.blkstack.control;

import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: the client
 * library only writes it. Every line must be a {@code # HELP}, a {@code # TYPE} or a sample; a
 * sample's family must have been typed before it; label values are quoted with the format's
 * escapes; a series appears once; a value is a number. Anything else throws with the line.
 */
public final class PrometheusText {

    private static final Pattern NAME = Pattern.compile("[a-zA-Z_:][a-zA-Z0-9_:]*");
    private static final Pattern HELP = Pattern.compile("# HELP (" + NAME + ") (.*)");
    private static final Pattern TYPE = Pattern.compile("# TYPE (" + NAME + ") (counter|gauge|histogram|summary|untyped)");
    private static final Pattern SAMPLE = Pattern.compile("(" + NAME + ")(\\{(.*)\\})? (\\S+)( -?\\d+)?");
    private static final Pattern LABEL = Pattern.compile("([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\\\\n]|\\\\[\\\\\"n])*)\"(,|$)");
    private static final Set<String> HISTOGRAM_SUFFIXES = Set.of("_bucket", "_count", "_sum", "_created");
    private static final Set<String> COUNTER_SUFFIXES = Set.of("_total", "_created");

    private final Map<String, String> types = new HashMap<>();
    private final Map<String, Double> samples = new LinkedHashMap<>();

    private PrometheusText() {
    }

    /** Parses {@code text}; throws {@link IllegalArgumentException} naming the first bad line. */
    public static PrometheusText parse(String text) {
        PrometheusText p = new PrometheusText();
        int n = 0;
        for (String line : text.split("\n", -1)) {
            n++;
            if (line.isEmpty()) {
                continue;
            }
            try {
                p.line(line);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("line " + n + ": " + e.getMessage() + ": " + line, e);
            }
        }
        return p;
    }

    private void line(String line) {
        if (line.startsWith("#")) {
            Matcher type = TYPE.matcher(line);
            if (type.matches()) {
                if (types.put(type.group(1), type.group(2)) != null) {
                    throw new IllegalArgumentException("second TYPE for " + type.group(1));
                }
                return;
            }
            if (HELP.matcher(line).matches()) {
                return;
            }
            throw new IllegalArgumentException("a comment that is neither HELP nor TYPE");
        }
        Matcher m = SAMPLE.matcher(line);
        if (!m.matches()) {
            throw new IllegalArgumentException("not a sample");
        }
        String name = m.group(1);
        if (family(name) == null) {
            throw new IllegalArgumentException("sample of " + name + " with no TYPE before it");
        }
        Map<String, String> labels = new TreeMap<>();
        if (m.group(3) != null && !m.group(3).isEmpty()) {
            Matcher l = LABEL.matcher(m.group(3));
            int at = 0;
            while (at < m.group(3).length()) {
                if (!l.find(at) || l.start() != at) {
                    throw new IllegalArgumentException("bad labels at " + at);
                }
                if (labels.put(l.group(1), l.group(2)) != null) {
                    throw new IllegalArgumentException("label " + l.group(1) + " twice");
                }
                at = l.end();
            }
        }
        double value = switch (m.group(4)) {
            case "+Inf" -> Double.POSITIVE_INFINITY;
            case "-Inf" -> Double.NEGATIVE_INFINITY;
            case "NaN" -> Double.NaN;
            default -> Double.parseDouble(m.group(4));
        };
        String key = key(name, labels);
        if (samples.put(key, value) != null) {
            throw new IllegalArgumentException("series " + key + " twice");
        }
    }

    /** The typed family {@code sample} belongs to, or null. */
    private String family(String sample) {
        if (types.containsKey(sample)) {
            return sample;
        }
        for (String suffix : sample.endsWith("_total") ? COUNTER_SUFFIXES : HISTOGRAM_SUFFIXES) {
            if (sample.endsWith(suffix)) {
                String base = sample.substring(0, sample.length() - suffix.length());
                String type = types.get(base);
                if (type != null && (type.equals("counter") ? COUNTER_SUFFIXES : HISTOGRAM_SUFFIXES).contains(suffix)) {
                    return base;
                }
            }
        }
        return null;
    }

    private static String key(String name, Map<String, String> labels) {
        StringBuilder b = new StringBuilder(name).append('{');
        labels.forEach((k, v) -> b.append(b.charAt(b.length() - 1) == '{' ? "" : ",").append(k).append('=').append(v));
        return b.append('}').toString();
    }

    /** The type declared for family {@code name}, or null. */
    public String type(String name) {
        return types.get(name);
    }

    /**
     * The value of series {@code name} with labels given as {@code key, value, ...}; throws if
     * there is no such series.
     */
    public double value(String name, String... labels) {
        Map<String, String> map = new TreeMap<>();
        for (int i = 0; i < labels.length; i += 2) {
            map.put(labels[i], labels[i + 1]);
        }
        Double v = samples.get(key(name, map));
        if (v == null) {
            throw new IllegalArgumentException("no series " + key(name, map) + " among " + samples.size());
        }
        return v;
    }

    /** Whether a series of this name exists at all. */
    public boolean has(String name) {
        String prefix = name + "{";
        return samples.keySet().stream().anyMatch(k -> k.startsWith(prefix));
    }
}
