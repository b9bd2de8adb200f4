package io.blkstack.kernel;

import java.util.Collection;
import java.util.Collections;
import java.util.EnumMap;
import java.util.Map;

/**
 * The policy switches of one kernel, all defaulting to the fixed designs. Immutable: a kernel's
 * policies are chosen when it is built, so a run cannot change design halfway.
 */
public final class Policies {

    private static final Policies DEFAULTS = new Policies(new EnumMap<>(PolicySwitch.class));

    /** The switches set so far; unmodifiable (a copy is made for every change). */
    private final Map<PolicySwitch, String> values;

    private Policies(EnumMap<PolicySwitch, String> values) {
        this.values = Collections.unmodifiableMap(values);
    }

    /** Every switch at its fixed default. */
    public static Policies defaults() {
        return DEFAULTS;
    }

    /** Parses assignments such as {@code submit-order=legacy}, applied over the defaults. */
    public static Policies parse(Collection<String> assignments) {
        Policies p = DEFAULTS;
        for (String assignment : assignments) {
            int eq = assignment.indexOf('=');
            if (eq <= 0 || eq == assignment.length() - 1) {
                throw new IllegalArgumentException("policy '" + assignment + "' is not NAME=VALUE; known names: "
                        + PolicySwitch.knownKeys());
            }
            p = p.with(PolicySwitch.byKey(assignment.substring(0, eq).trim()), assignment.substring(eq + 1).trim());
        }
        return p;
    }

    /** A copy with one switch set; {@code fixed} means the default. */
    public Policies with(PolicySwitch sw, String value) {
        String v = "fixed".equals(value) ? sw.defaultValue() : value;
        if (!sw.choices().contains(v)) {
            throw new IllegalArgumentException("policy " + sw.key() + " has no value '" + value + "'; accepted: fixed, "
                    + String.join(", ", sw.choices()));
        }
        EnumMap<PolicySwitch, String> copy = new EnumMap<>(PolicySwitch.class);
        copy.putAll(values);
        copy.put(sw, v);
        return new Policies(copy);
    }

    /** The value of a switch. */
    public String value(PolicySwitch sw) {
        return values.getOrDefault(sw, sw.defaultValue());
    }

    /** Whether a switch is at its old design. */
    public boolean isLegacy(PolicySwitch sw) {
        return PolicySwitch.LEGACY.equals(value(sw));
    }

    /** The switches that differ from the defaults, as {@code name=value}. */
    public String describe() {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<PolicySwitch, String> e : values.entrySet()) {
            if (!e.getValue().equals(e.getKey().defaultValue())) {
                sb.append(sb.length() == 0 ? "" : " ").append(e.getKey().key()).append('=').append(e.getValue());
            }
        }
        return sb.length() == 0 ? "defaults" : sb.toString();
    }

    @Override
    public String toString() {
        return describe();
    }
}
