//! The Porter stemmer exactly as NLTK's `PorterStemmer()` (its default
//! `NLTK_EXTENSIONS` mode), which Google's `rouge-score` uses.
//!
//! NLTK departs from Martin Porter's original in a few places — a pool of
//! irregular forms, `ies`/`ied` on four-letter words, `y → i` only after a
//! consonant, `alli`, `fulli` and `logi` in step 2, and two-letter
//! vowel-consonant stems counting as "cvc" — and ROUGE scores with stemming
//! only match `rouge-score` when all of them are followed. The test compares
//! more than 5,000 words with NLTK 3.10.4 (`tests/fixtures/porter.tsv`).
//!
//! Words are ASCII here (ROUGE tokens are `[a-z0-9]+`); other input is
//! returned lowercased and otherwise unchanged.

/// The stem of `word`, lowercased first.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(irregular) = irregular_form(&lower) {
        return irregular.to_owned();
    }
    if lower.chars().count() <= 2 || !lower.is_ascii() {
        return lower;
    }
    let mut w = lower.into_bytes();
    step1a(&mut w);
    step1b(&mut w);
    step1c(&mut w);
    step2(&mut w);
    step3(&mut w);
    step4(&mut w);
    step5a(&mut w);
    step5b(&mut w);
    // Only ASCII bytes were removed or added.
    String::from_utf8(w).unwrap_or_default()
}

fn irregular_form(word: &str) -> Option<&'static str> {
    Some(match word {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Whether `w[i]` is a consonant: not a vowel, and a `y` only when it
/// follows a vowel (or starts the word).
fn is_consonant(w: &[u8], i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] == b'y' {
        return i == 0 || !is_consonant(w, i - 1);
    }
    true
}

/// Porter's m: the number of vowel-consonant sequences.
fn measure(stem: &[u8]) -> usize {
    let mut m = 0;
    let mut previous_vowel = false;
    for i in 0..stem.len() {
        let consonant = is_consonant(stem, i);
        if consonant && previous_vowel {
            m += 1;
        }
        previous_vowel = !consonant;
    }
    m
}

fn contains_vowel(stem: &[u8]) -> bool {
    (0..stem.len()).any(|i| !is_consonant(stem, i))
}

fn ends_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

/// A condition on the stem left when a suffix is removed.
type Condition = fn(&[u8]) -> bool;

fn positive_measure(stem: &[u8]) -> bool {
    measure(stem) > 0
}

fn measure_above_one(stem: &[u8]) -> bool {
    measure(stem) > 1
}

/// NLTK's `_apply_rule_list` for plain suffixes: the first suffix that
/// matches decides; its replacement applies only if the condition holds.
fn apply_rules(w: &mut Vec<u8>, rules: &[(&str, &str, Option<Condition>)]) {
    for &(suffix, replacement, condition) in rules {
        if w.ends_with(suffix.as_bytes()) {
            let stem_len = w.len() - suffix.len();
            if condition.is_none_or(|holds| holds(&w[..stem_len])) {
                w.truncate(stem_len);
                w.extend_from_slice(replacement.as_bytes());
            }
            return;
        }
    }
}

fn replace_suffix(w: &mut Vec<u8>, suffix_len: usize, replacement: &str) {
    w.truncate(w.len() - suffix_len);
    w.extend_from_slice(replacement.as_bytes());
}

fn step1a(w: &mut Vec<u8>) {
    if w.ends_with(b"ies") && w.len() == 4 {
        replace_suffix(w, 3, "ie");
        return;
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    );
}

fn step1b(w: &mut Vec<u8>) {
    if w.ends_with(b"ied") {
        let replacement = if w.len() == 4 { "ie" } else { "i" };
        replace_suffix(w, 3, replacement);
        return;
    }
    if w.ends_with(b"eed") {
        if measure(&w[..w.len() - 3]) > 0 {
            replace_suffix(w, 3, "ee");
        }
        return;
    }
    let mut stem_len = None;
    for suffix in [&b"ed"[..], b"ing"] {
        if w.ends_with(suffix) && contains_vowel(&w[..w.len() - suffix.len()]) {
            stem_len = Some(w.len() - suffix.len());
            break;
        }
    }
    let Some(stem_len) = stem_len else { return };
    w.truncate(stem_len);
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if w.ends_with(suffix.as_bytes()) {
            replace_suffix(w, suffix.len(), replacement);
            return;
        }
    }
    if ends_double_consonant(w) {
        if !matches!(w[w.len() - 1], b'l' | b's' | b'z') {
            w.pop();
        }
        return;
    }
    if measure(w) == 1 && ends_cvc(w) {
        w.push(b'e');
    }
}

fn step1c(w: &mut Vec<u8>) {
    if w.ends_with(b"y") {
        let stem_len = w.len() - 1;
        if stem_len > 1 && is_consonant(w, stem_len - 1) {
            replace_suffix(w, 1, "i");
        }
    }
}

fn step2(w: &mut Vec<u8>) {
    if w.ends_with(b"alli") && positive_measure(&w[..w.len() - 4]) {
        replace_suffix(w, 4, "al");
        return step2(w);
    }
    let p: Option<Condition> = Some(positive_measure);
    let logi: Condition = |stem| positive_measure(&[stem, b"l"].concat());
    apply_rules(
        w,
        &[
            ("ational", "ate", p),
            ("tional", "tion", p),
            ("enci", "ence", p),
            ("anci", "ance", p),
            ("izer", "ize", p),
            ("bli", "ble", p),
            ("alli", "al", p),
            ("entli", "ent", p),
            ("eli", "e", p),
            ("ousli", "ous", p),
            ("ization", "ize", p),
            ("ation", "ate", p),
            ("ator", "ate", p),
            ("alism", "al", p),
            ("iveness", "ive", p),
            ("fulness", "ful", p),
            ("ousness", "ous", p),
            ("aliti", "al", p),
            ("iviti", "ive", p),
            ("biliti", "ble", p),
            ("fulli", "ful", p),
            ("logi", "log", Some(logi)),
        ],
    );
}

fn step3(w: &mut Vec<u8>) {
    let p: Option<Condition> = Some(positive_measure);
    apply_rules(
        w,
        &[
            ("icate", "ic", p),
            ("ative", "", p),
            ("alize", "al", p),
            ("iciti", "ic", p),
            ("ical", "ic", p),
            ("ful", "", p),
            ("ness", "", p),
        ],
    );
}

fn step4(w: &mut Vec<u8>) {
    let m: Option<Condition> = Some(measure_above_one);
    let ion: Condition = |stem| measure(stem) > 1 && matches!(stem.last(), Some(b's' | b't'));
    apply_rules(
        w,
        &[
            ("al", "", m),
            ("ance", "", m),
            ("ence", "", m),
            ("er", "", m),
            ("ic", "", m),
            ("able", "", m),
            ("ible", "", m),
            ("ant", "", m),
            ("ement", "", m),
            ("ment", "", m),
            ("ent", "", m),
            ("ion", "", Some(ion)),
            ("ou", "", m),
            ("ism", "", m),
            ("ate", "", m),
            ("iti", "", m),
            ("ous", "", m),
            ("ive", "", m),
            ("ize", "", m),
        ],
    );
}

fn step5a(w: &mut Vec<u8>) {
    if w.ends_with(b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            w.pop();
        }
    }
}

fn step5b(w: &mut Vec<u8>) {
    // NLTK measures the word without its last letter, not the stem.
    if w.ends_with(b"ll") && measure(&w[..w.len() - 1]) > 1 {
        w.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn stems_classic_examples() {
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalizations", "gener"),
            ("skies", "sky"),
            ("dying", "die"),
            ("controll", "control"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
