import { createRequire as __tsbuildCreateRequire } from 'node:module';
const require = __tsbuildCreateRequire(import.meta.url);
var __create = Object.create;
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __getProtoOf = Object.getPrototypeOf;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __require = /* @__PURE__ */ ((x) => typeof require !== "undefined" ? require : typeof Proxy !== "undefined" ? new Proxy(x, {
  get: (a, b) => (typeof require !== "undefined" ? require : a)[b]
}) : x)(function(x) {
  if (typeof require !== "undefined") return require.apply(this, arguments);
  throw Error('Dynamic require of "' + x + '" is not supported');
});
var __esm = (fn, res, err) => function __init() {
  if (err) throw err[0];
  try {
    return fn && (res = (0, fn[__getOwnPropNames(fn)[0]])(fn = 0)), res;
  } catch (e) {
    throw err = [e], e;
  }
};
var __commonJS = (cb, mod) => function __require2() {
  try {
    return mod || (0, cb[__getOwnPropNames(cb)[0]])((mod = { exports: {} }).exports, mod), mod.exports;
  } catch (e) {
    throw mod = 0, e;
  }
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toESM = (mod, isNodeMode, target2) => (target2 = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
  // If the importer is in node compatibility mode or this is not an ESM
  // file that has been converted to a CommonJS file using a Babel-
  // compatible transform (i.e. "__esModule" has not been set), then set
  // "default" to the CommonJS "module.exports" for node compatibility.
  isNodeMode || !mod || !mod.__esModule ? __defProp(target2, "default", { value: mod, enumerable: true }) : target2,
  mod
));

// <define:TSBUILD_NATIVE_VERSIONS>
var define_TSBUILD_NATIVE_VERSIONS_default;
var init_define_TSBUILD_NATIVE_VERSIONS = __esm({
  "<define:TSBUILD_NATIVE_VERSIONS>"() {
    define_TSBUILD_NATIVE_VERSIONS_default = { "@napi-rs/blake-hash": "1.3.6", "@napi-rs/xattr": "1.0.3" };
  }
});

// node_modules/.pnpm/@balena+dockerignore@1.0.2/node_modules/@balena/dockerignore/ignore.js
var require_ignore = __commonJS({
  "node_modules/.pnpm/@balena+dockerignore@1.0.2/node_modules/@balena/dockerignore/ignore.js"(exports, module) {
    "use strict";
    init_define_TSBUILD_NATIVE_VERSIONS();
    var path8 = __require("path");
    var factory = (options) => new IgnoreBase(options);
    factory.default = factory;
    module.exports = factory;
    function make_array(subject) {
      return Array.isArray(subject) ? subject : [subject];
    }
    var REGEX_TRAILING_SLASH = /(?<=.)\/$/;
    var REGEX_TRAILING_BACKSLASH = /(?<=.)\\$/;
    var REGEX_TRAILING_PATH_SEP = path8.sep === "\\" ? REGEX_TRAILING_BACKSLASH : REGEX_TRAILING_SLASH;
    var KEY_IGNORE = typeof Symbol !== "undefined" ? /* @__PURE__ */ Symbol.for("dockerignore") : "dockerignore";
    function cleanPath2(file) {
      return path8.normalize(file).replace(REGEX_TRAILING_PATH_SEP, "");
    }
    function toSlash(file) {
      if (path8.sep === "/") {
        return file;
      }
      return file.replace(/\\/g, "/");
    }
    function fromSlash(file) {
      if (path8.sep === "/") {
        return file;
      }
      return file.replace(/\//g, path8.sep);
    }
    var IgnoreBase = class {
      constructor({
        // https://github.com/kaelzhang/node-ignore/blob/5.1.4/index.js#L372
        ignorecase = true
      } = {}) {
        this._rules = [];
        this._ignorecase = ignorecase;
        this[KEY_IGNORE] = true;
        this._initCache();
      }
      _initCache() {
        this._cache = {};
      }
      // @param {Array.<string>|string|Ignore} pattern
      add(pattern) {
        this._added = false;
        if (typeof pattern === "string") {
          pattern = pattern.split(/\r?\n/g);
        }
        make_array(pattern).forEach(this._addPattern, this);
        if (this._added) {
          this._initCache();
        }
        return this;
      }
      // legacy
      addPattern(pattern) {
        return this.add(pattern);
      }
      _addPattern(pattern) {
        if (pattern && pattern[KEY_IGNORE]) {
          this._rules = this._rules.concat(pattern._rules);
          this._added = true;
          return;
        }
        if (this._checkPattern(pattern)) {
          const rule2 = this._createRule(pattern.trim());
          if (rule2 !== null) {
            this._added = true;
            this._rules.push(rule2);
          }
        }
      }
      _checkPattern(pattern) {
        return pattern && typeof pattern === "string" && pattern.indexOf("#") !== 0 && pattern.trim() !== "";
      }
      filter(paths) {
        return make_array(paths).filter((path9) => this._filter(path9));
      }
      createFilter() {
        return (path9) => this._filter(path9);
      }
      ignores(path9) {
        return !this._filter(path9);
      }
      // https://github.com/moby/moby/blob/v19.03.8/builder/dockerignore/dockerignore.go#L41-L53
      // https://github.com/moby/moby/blob/v19.03.8/pkg/fileutils/fileutils.go#L29-L55
      _createRule(pattern) {
        const origin = pattern;
        let negative = false;
        if (pattern[0] === "!") {
          negative = true;
          pattern = pattern.substring(1).trim();
        }
        if (pattern.length > 0) {
          pattern = cleanPath2(pattern);
          pattern = toSlash(pattern);
          if (pattern.length > 1 && pattern[0] === "/") {
            pattern = pattern.slice(1);
          }
        }
        if (negative) {
          pattern = "!" + pattern;
        }
        pattern = pattern.trim();
        if (pattern === "") {
          return null;
        }
        pattern = cleanPath2(pattern);
        if (pattern[0] === "!") {
          if (pattern.length === 1) {
            return null;
          }
          negative = true;
          pattern = pattern.substring(1);
        } else {
          negative = false;
        }
        return {
          origin,
          pattern,
          // https://github.com/moby/moby/blob/v19.03.8/pkg/fileutils/fileutils.go#L54
          dirs: pattern.split(path8.sep),
          negative
        };
      }
      // @returns `Boolean` true if the `path` is NOT ignored
      _filter(path9) {
        if (!path9) {
          return false;
        }
        if (path9 in this._cache) {
          return this._cache[path9];
        }
        return this._cache[path9] = this._test(path9);
      }
      // @returns {Boolean} true if a file is NOT ignored
      // https://github.com/moby/moby/blob/v19.03.8/pkg/fileutils/fileutils.go#L62
      _test(file) {
        file = fromSlash(file);
        const parentPath = cleanPath2(path8.dirname(file));
        const parentPathDirs = parentPath.split(path8.sep);
        let matched = false;
        this._rules.forEach((rule2) => {
          let match = this._match(file, rule2);
          if (!match && parentPath !== ".") {
            if (rule2.dirs.includes("**")) {
              for (let i = rule2.dirs.filter((x) => x !== "**").length; i <= parentPathDirs.length; i++) {
                match = match || this._match(parentPathDirs.slice(0, i).join(path8.sep), rule2);
              }
            } else if (rule2.dirs.length <= parentPathDirs.length) {
              match = this._match(parentPathDirs.slice(0, rule2.dirs.length).join(path8.sep), rule2);
            }
          }
          if (match) {
            matched = !rule2.negative;
          }
        });
        return !matched;
      }
      // @returns {Boolean} true if a file is matched by a rule
      _match(file, rule2) {
        return this._compile(rule2).regexp.test(file);
      }
      // https://github.com/moby/moby/blob/v19.03.8/pkg/fileutils/fileutils.go#L139
      _compile(rule2) {
        if (rule2.regexp) {
          return rule2;
        }
        let regStr = "^";
        let escapedSlash = path8.sep === "\\" ? "\\\\" : path8.sep;
        for (let i = 0; i < rule2.pattern.length; i++) {
          const ch = rule2.pattern[i];
          if (ch === "*") {
            if (rule2.pattern[i + 1] === "*") {
              i++;
              if (rule2.pattern[i + 1] === path8.sep) {
                i++;
              }
              if (rule2.pattern[i + 1] === void 0) {
                regStr += ".*";
              } else {
                regStr += `(.*${escapedSlash})?`;
              }
            } else {
              regStr += `[^${escapedSlash}]*`;
            }
          } else if (ch === "?") {
            regStr += `[^${escapedSlash}]`;
          } else if (ch === "." || ch === "$") {
            regStr += `\\${ch}`;
          } else if (ch === "\\") {
            if (path8.sep === "\\") {
              regStr += escapedSlash;
              continue;
            }
            if (rule2.pattern[i + 1] !== void 0) {
              regStr += "\\" + rule2.pattern[i + 1];
              i++;
            } else {
              regStr += "\\";
            }
          } else {
            regStr += ch;
          }
        }
        regStr += "$";
        rule2.regexp = new RegExp(regStr, this._ignorecase ? "i" : "");
        return rule2;
      }
    };
  }
});

// node_modules/.pnpm/spdx-license-ids@3.0.24/node_modules/spdx-license-ids/index.json
var require_spdx_license_ids = __commonJS({
  "node_modules/.pnpm/spdx-license-ids@3.0.24/node_modules/spdx-license-ids/index.json"(exports, module) {
    module.exports = [
      "0BSD",
      "3D-Slicer-1.0",
      "AAL",
      "ADSL",
      "AFL-1.1",
      "AFL-1.2",
      "AFL-2.0",
      "AFL-2.1",
      "AFL-3.0",
      "AGPL-1.0-only",
      "AGPL-1.0-or-later",
      "AGPL-3.0-only",
      "AGPL-3.0-or-later",
      "ALGLIB-Documentation",
      "AMD-newlib",
      "AMDPLPA",
      "AML",
      "AML-glslang",
      "AMPAS",
      "ANTLR-PD",
      "ANTLR-PD-fallback",
      "APAFML",
      "APL-1.0",
      "APSL-1.0",
      "APSL-1.1",
      "APSL-1.2",
      "APSL-2.0",
      "ASWF-Digital-Assets-1.0",
      "ASWF-Digital-Assets-1.1",
      "Abstyles",
      "AdaCore-doc",
      "Adobe-2006",
      "Adobe-Display-PostScript",
      "Adobe-Glyph",
      "Adobe-Utopia",
      "Advanced-Cryptics-Dictionary",
      "Afmparse",
      "Aladdin",
      "Apache-1.0",
      "Apache-1.1",
      "Apache-2.0",
      "App-s2p",
      "Arphic-1999",
      "Artistic-1.0",
      "Artistic-1.0-Perl",
      "Artistic-1.0-cl8",
      "Artistic-2.0",
      "Artistic-dist",
      "Aspell-RU",
      "BOLA-1.1",
      "BSD-1-Clause",
      "BSD-2-Clause",
      "BSD-2-Clause-Darwin",
      "BSD-2-Clause-Patent",
      "BSD-2-Clause-Views",
      "BSD-2-Clause-first-lines",
      "BSD-2-Clause-pkgconf-disclaimer",
      "BSD-2-Clause-pos-unchanged",
      "BSD-3-Clause",
      "BSD-3-Clause-Attribution",
      "BSD-3-Clause-Clear",
      "BSD-3-Clause-HP",
      "BSD-3-Clause-LBNL",
      "BSD-3-Clause-Modification",
      "BSD-3-Clause-No-Military-License",
      "BSD-3-Clause-No-Nuclear-License",
      "BSD-3-Clause-No-Nuclear-License-2014",
      "BSD-3-Clause-No-Nuclear-Warranty",
      "BSD-3-Clause-Open-MPI",
      "BSD-3-Clause-OpenWebUI",
      "BSD-3-Clause-Sun",
      "BSD-3-Clause-Tso",
      "BSD-3-Clause-acpica",
      "BSD-3-Clause-flex",
      "BSD-4-Clause",
      "BSD-4-Clause-Shortened",
      "BSD-4-Clause-UC",
      "BSD-4.3RENO",
      "BSD-4.3TAHOE",
      "BSD-Advertising-Acknowledgement",
      "BSD-Attribution-HPND-disclaimer",
      "BSD-Inferno-Nettverk",
      "BSD-Mark-Modifications",
      "BSD-Protection",
      "BSD-Source-Code",
      "BSD-Source-Code-no-disclaimer",
      "BSD-Source-alt-GPL",
      "BSD-Source-beginning-file",
      "BSD-Systemics",
      "BSD-Systemics-W3Works",
      "BSD-ask-to-endorse",
      "BSL-1.0",
      "BUSL-1.1",
      "Baekmuk",
      "Bahyph",
      "Barr",
      "Beerware",
      "BitTorrent-1.0",
      "BitTorrent-1.1",
      "Bitstream-Charter",
      "Bitstream-Vera",
      "BlueOak-1.0.0",
      "Boehm-GC",
      "Boehm-GC-without-fee",
      "Borceux",
      "Brian-Gladman-2-Clause",
      "Brian-Gladman-3-Clause",
      "Brian-Gladman-3-Clause-no-conversion",
      "Buddy",
      "Bugroff",
      "C-UDA-1.0",
      "CAL-1.0",
      "CAL-1.0-Combined-Work-Exception",
      "CAPEC-tou",
      "CATOSL-1.1",
      "CC-BY-1.0",
      "CC-BY-2.0",
      "CC-BY-2.5",
      "CC-BY-2.5-AU",
      "CC-BY-3.0",
      "CC-BY-3.0-AT",
      "CC-BY-3.0-AU",
      "CC-BY-3.0-DE",
      "CC-BY-3.0-IGO",
      "CC-BY-3.0-NL",
      "CC-BY-3.0-US",
      "CC-BY-4.0",
      "CC-BY-NC-1.0",
      "CC-BY-NC-2.0",
      "CC-BY-NC-2.5",
      "CC-BY-NC-3.0",
      "CC-BY-NC-3.0-DE",
      "CC-BY-NC-3.0-IGO",
      "CC-BY-NC-4.0",
      "CC-BY-NC-ND-1.0",
      "CC-BY-NC-ND-2.0",
      "CC-BY-NC-ND-2.5",
      "CC-BY-NC-ND-3.0",
      "CC-BY-NC-ND-3.0-DE",
      "CC-BY-NC-ND-3.0-IGO",
      "CC-BY-NC-ND-4.0",
      "CC-BY-NC-SA-1.0",
      "CC-BY-NC-SA-2.0",
      "CC-BY-NC-SA-2.0-DE",
      "CC-BY-NC-SA-2.0-FR",
      "CC-BY-NC-SA-2.0-UK",
      "CC-BY-NC-SA-2.5",
      "CC-BY-NC-SA-3.0",
      "CC-BY-NC-SA-3.0-DE",
      "CC-BY-NC-SA-3.0-IGO",
      "CC-BY-NC-SA-4.0",
      "CC-BY-ND-1.0",
      "CC-BY-ND-2.0",
      "CC-BY-ND-2.5",
      "CC-BY-ND-3.0",
      "CC-BY-ND-3.0-DE",
      "CC-BY-ND-4.0",
      "CC-BY-SA-1.0",
      "CC-BY-SA-2.0",
      "CC-BY-SA-2.0-UK",
      "CC-BY-SA-2.1-JP",
      "CC-BY-SA-2.5",
      "CC-BY-SA-3.0",
      "CC-BY-SA-3.0-AT",
      "CC-BY-SA-3.0-DE",
      "CC-BY-SA-3.0-IGO",
      "CC-BY-SA-4.0",
      "CC-PDDC",
      "CC-PDM-1.0",
      "CC-SA-1.0",
      "CC0-1.0",
      "CDDL-1.0",
      "CDDL-1.1",
      "CDL-1.0",
      "CDLA-Permissive-1.0",
      "CDLA-Permissive-2.0",
      "CDLA-Sharing-1.0",
      "CECILL-1.0",
      "CECILL-1.1",
      "CECILL-2.0",
      "CECILL-2.1",
      "CECILL-B",
      "CECILL-C",
      "CERN-OHL-1.1",
      "CERN-OHL-1.2",
      "CERN-OHL-P-2.0",
      "CERN-OHL-S-2.0",
      "CERN-OHL-W-2.0",
      "CFITSIO",
      "CMU-Mach",
      "CMU-Mach-nodoc",
      "CNRI-Jython",
      "CNRI-Python",
      "CNRI-Python-GPL-Compatible",
      "COIL-1.0",
      "CPAL-1.0",
      "CPL-1.0",
      "CPOL-1.02",
      "CUA-OPL-1.0",
      "Caldera",
      "Caldera-no-preamble",
      "Catharon",
      "ClArtistic",
      "Clips",
      "Community-Spec-1.0",
      "Condor-1.1",
      "Cornell-Lossless-JPEG",
      "Cronyx",
      "Crossword",
      "CryptoSwift",
      "CrystalStacker",
      "Cube",
      "D-FSL-1.0",
      "DEC-3-Clause",
      "DL-DE-BY-2.0",
      "DL-DE-ZERO-2.0",
      "DOC",
      "DRL-1.0",
      "DRL-1.1",
      "DSDP",
      "DocBook-DTD",
      "DocBook-Schema",
      "DocBook-Stylesheet",
      "DocBook-XML",
      "Dotseqn",
      "ECL-1.0",
      "ECL-2.0",
      "EFL-1.0",
      "EFL-2.0",
      "EPICS",
      "EPL-1.0",
      "EPL-2.0",
      "ESA-PL-permissive-2.4",
      "ESA-PL-strong-copyleft-2.4",
      "ESA-PL-weak-copyleft-2.4",
      "EUDatagrid",
      "EUPL-1.0",
      "EUPL-1.1",
      "EUPL-1.2",
      "Elastic-2.0",
      "Entessa",
      "ErlPL-1.1",
      "Eurosym",
      "FBM",
      "FDK-AAC",
      "FDK-MPEG-H",
      "FSFAP",
      "FSFAP-no-warranty-disclaimer",
      "FSFUL",
      "FSFULLR",
      "FSFULLRSD",
      "FSFULLRWD",
      "FSL-1.1-ALv2",
      "FSL-1.1-MIT",
      "FTL",
      "Fair",
      "Ferguson-Twofish",
      "Frameworx-1.0",
      "FreeBSD-DOC",
      "FreeImage",
      "Furuseth",
      "GCR-docs",
      "GD",
      "GFDL-1.1-invariants-only",
      "GFDL-1.1-invariants-or-later",
      "GFDL-1.1-no-invariants-only",
      "GFDL-1.1-no-invariants-or-later",
      "GFDL-1.1-only",
      "GFDL-1.1-or-later",
      "GFDL-1.2-invariants-only",
      "GFDL-1.2-invariants-or-later",
      "GFDL-1.2-no-invariants-only",
      "GFDL-1.2-no-invariants-or-later",
      "GFDL-1.2-only",
      "GFDL-1.2-or-later",
      "GFDL-1.3-invariants-only",
      "GFDL-1.3-invariants-or-later",
      "GFDL-1.3-no-invariants-only",
      "GFDL-1.3-no-invariants-or-later",
      "GFDL-1.3-only",
      "GFDL-1.3-or-later",
      "GL2PS",
      "GLWTPL",
      "GPL-1.0-only",
      "GPL-1.0-or-later",
      "GPL-2.0-only",
      "GPL-2.0-or-later",
      "GPL-3.0-only",
      "GPL-3.0-or-later",
      "Game-Programming-Gems",
      "Giftware",
      "Glide",
      "Glulxe",
      "Graphics-Gems",
      "Gutmann",
      "HDF5",
      "HIDAPI",
      "HP-1986",
      "HP-1989",
      "HPND",
      "HPND-DEC",
      "HPND-Fenneberg-Livingston",
      "HPND-INRIA-IMAG",
      "HPND-Intel",
      "HPND-Kevlin-Henney",
      "HPND-MIT-disclaimer",
      "HPND-Markus-Kuhn",
      "HPND-Netrek",
      "HPND-Pbmplus",
      "HPND-SMC",
      "HPND-UC",
      "HPND-UC-export-US",
      "HPND-doc",
      "HPND-doc-sell",
      "HPND-export-US",
      "HPND-export-US-acknowledgement",
      "HPND-export-US-modify",
      "HPND-export2-US",
      "HPND-merchantability-variant",
      "HPND-sell-MIT-disclaimer-xserver",
      "HPND-sell-regexpr",
      "HPND-sell-variant",
      "HPND-sell-variant-MIT-disclaimer",
      "HPND-sell-variant-MIT-disclaimer-rev",
      "HPND-sell-variant-critical-systems",
      "HTMLTIDY",
      "HaskellReport",
      "Hippocratic-2.1",
      "Hippocratic-3.0-core",
      "IBM-pibs",
      "ICU",
      "IEC-Code-Components-EULA",
      "IJG",
      "IJG-short",
      "IPA",
      "IPL-1.0",
      "ISC",
      "ISC-Veillard",
      "ISO-permission",
      "ImageMagick",
      "Imlib2",
      "Info-ZIP",
      "Informatica",
      "Inner-Net-2.0",
      "InnoSetup",
      "Intel",
      "Intel-ACPI",
      "Interbase-1.0",
      "JPL-image",
      "JPNIC",
      "JSON",
      "Jam",
      "JasPer-2.0",
      "Kastrup",
      "Kazlib",
      "Knuth-CTAN",
      "LAL-1.2",
      "LAL-1.3",
      "LGPL-2.0-only",
      "LGPL-2.0-or-later",
      "LGPL-2.1-only",
      "LGPL-2.1-or-later",
      "LGPL-3.0-only",
      "LGPL-3.0-or-later",
      "LGPLLR",
      "LOOP",
      "LPD-document",
      "LPL-1.0",
      "LPL-1.02",
      "LPPL-1.0",
      "LPPL-1.1",
      "LPPL-1.2",
      "LPPL-1.3a",
      "LPPL-1.3c",
      "LZMA-SDK-9.11-to-9.20",
      "LZMA-SDK-9.22",
      "Latex2e",
      "Latex2e-translated-notice",
      "Leptonica",
      "LiLiQ-P-1.1",
      "LiLiQ-R-1.1",
      "LiLiQ-Rplus-1.1",
      "Libpng",
      "Linux-OpenIB",
      "Linux-man-pages-1-para",
      "Linux-man-pages-copyleft",
      "Linux-man-pages-copyleft-2-para",
      "Linux-man-pages-copyleft-var",
      "Lucida-Bitmap-Fonts",
      "MIPS",
      "MIT",
      "MIT-0",
      "MIT-CMU",
      "MIT-Click",
      "MIT-Festival",
      "MIT-Khronos-old",
      "MIT-Modern-Variant",
      "MIT-STK",
      "MIT-Wu",
      "MIT-advertising",
      "MIT-enna",
      "MIT-feh",
      "MIT-open-group",
      "MIT-testregex",
      "MITNFA",
      "MMIXware",
      "MMPL-1.0.1",
      "MPEG-SSG",
      "MPL-1.0",
      "MPL-1.1",
      "MPL-2.0",
      "MPL-2.0-no-copyleft-exception",
      "MS-LPL",
      "MS-PL",
      "MS-RL",
      "MTLL",
      "MVT-1.1",
      "Mackerras-3-Clause",
      "Mackerras-3-Clause-acknowledgment",
      "MakeIndex",
      "Martin-Birgmeier",
      "McPhee-slideshow",
      "Minpack",
      "MirOS",
      "Motosoto",
      "MulanPSL-1.0",
      "MulanPSL-2.0",
      "Multics",
      "Mup",
      "NAIST-2003",
      "NASA-1.3",
      "NBPL-1.0",
      "NCBI-PD",
      "NCGL-UK-2.0",
      "NCL",
      "NCSA",
      "NGPL",
      "NICTA-1.0",
      "NIST-PD",
      "NIST-PD-TNT",
      "NIST-PD-fallback",
      "NIST-Software",
      "NLOD-1.0",
      "NLOD-2.0",
      "NLPL",
      "NOSL",
      "NPL-1.0",
      "NPL-1.1",
      "NPOSL-3.0",
      "NRL",
      "NTIA-PD",
      "NTP",
      "NTP-0",
      "Naumen",
      "NetCDF",
      "Newsletr",
      "Nokia",
      "Noweb",
      "O-UDA-1.0",
      "OAR",
      "OCCT-PL",
      "OCLC-2.0",
      "ODC-By-1.0",
      "ODbL-1.0",
      "OFFIS",
      "OFL-1.0",
      "OFL-1.0-RFN",
      "OFL-1.0-no-RFN",
      "OFL-1.1",
      "OFL-1.1-RFN",
      "OFL-1.1-no-RFN",
      "OGC-1.0",
      "OGDL-Taiwan-1.0",
      "OGL-Canada-2.0",
      "OGL-UK-1.0",
      "OGL-UK-2.0",
      "OGL-UK-3.0",
      "OGTSL",
      "OLDAP-1.1",
      "OLDAP-1.2",
      "OLDAP-1.3",
      "OLDAP-1.4",
      "OLDAP-2.0",
      "OLDAP-2.0.1",
      "OLDAP-2.1",
      "OLDAP-2.2",
      "OLDAP-2.2.1",
      "OLDAP-2.2.2",
      "OLDAP-2.3",
      "OLDAP-2.4",
      "OLDAP-2.5",
      "OLDAP-2.6",
      "OLDAP-2.7",
      "OLDAP-2.8",
      "OLFL-1.3",
      "OML",
      "OPL-1.0",
      "OPL-UK-3.0",
      "OPUBL-1.0",
      "OSC-1.0",
      "OSET-PL-2.1",
      "OSL-1.0",
      "OSL-1.1",
      "OSL-2.0",
      "OSL-2.1",
      "OSL-3.0",
      "OSSP",
      "OpenMDW-1.0",
      "OpenPBS-2.3",
      "OpenSSL",
      "OpenSSL-standalone",
      "OpenVision",
      "PADL",
      "PDDL-1.0",
      "PHP-3.0",
      "PHP-3.01",
      "PPL",
      "PSF-2.0",
      "ParaType-Free-Font-1.3",
      "Parity-6.0.0",
      "Parity-7.0.0",
      "Pixar",
      "Plexus",
      "PolyForm-Noncommercial-1.0.0",
      "PolyForm-Small-Business-1.0.0",
      "PostgreSQL",
      "Python-2.0",
      "Python-2.0.1",
      "QPL-1.0",
      "QPL-1.0-INRIA-2004",
      "Qhull",
      "RHeCos-1.1",
      "RPL-1.1",
      "RPL-1.5",
      "RPSL-1.0",
      "RSA-MD",
      "RSCPL",
      "Rdisc",
      "Ruby",
      "Ruby-pty",
      "SAX-PD",
      "SAX-PD-2.0",
      "SCEA",
      "SGI-B-1.0",
      "SGI-B-1.1",
      "SGI-B-2.0",
      "SGI-OpenGL",
      "SGMLUG-PM",
      "SGP4",
      "SHL-0.5",
      "SHL-0.51",
      "SISSL",
      "SISSL-1.2",
      "SL",
      "SMAIL-GPL",
      "SMLNJ",
      "SMPPL",
      "SNIA",
      "SOFA",
      "SPL-1.0",
      "SSH-OpenSSH",
      "SSH-short",
      "SSLeay-standalone",
      "SSPL-1.0",
      "SUL-1.0",
      "SWL",
      "Saxpath",
      "SchemeReport",
      "Sendmail",
      "Sendmail-8.23",
      "Sendmail-Open-Source-1.1",
      "SimPL-2.0",
      "Sleepycat",
      "Soundex",
      "Spencer-86",
      "Spencer-94",
      "Spencer-99",
      "SugarCRM-1.1.3",
      "Sun-PPP",
      "Sun-PPP-2000",
      "SunPro",
      "Symlinks",
      "TAPR-OHL-1.0",
      "TCL",
      "TCP-wrappers",
      "TGPPL-1.0",
      "TMate",
      "TORQUE-1.1",
      "TOSL",
      "TPDL",
      "TPL-1.0",
      "TTWL",
      "TTYP0",
      "TU-Berlin-1.0",
      "TU-Berlin-2.0",
      "TekHVC",
      "TermReadKey",
      "ThirdEye",
      "TrustedQSL",
      "UCAR",
      "UCL-1.0",
      "UMich-Merit",
      "UPL-1.0",
      "URT-RLE",
      "Ubuntu-font-1.0",
      "UnRAR",
      "Unicode-3.0",
      "Unicode-DFS-2015",
      "Unicode-DFS-2016",
      "Unicode-TOU",
      "UnixCrypt",
      "Unlicense",
      "Unlicense-libtelnet",
      "Unlicense-libwhirlpool",
      "VOSTROM",
      "VSL-1.0",
      "Vim",
      "Vixie-Cron",
      "W3C",
      "W3C-19980720",
      "W3C-20150513",
      "WTFNMFPL",
      "WTFPL",
      "Watcom-1.0",
      "Widget-Workshop",
      "WordNet",
      "Wsuipa",
      "X11",
      "X11-distribute-modifications-variant",
      "X11-no-permit-persons",
      "X11-swapped",
      "XFree86-1.1",
      "XSkat",
      "Xdebug-1.03",
      "Xerox",
      "Xfig",
      "Xnet",
      "YPL-1.0",
      "YPL-1.1",
      "ZPL-1.1",
      "ZPL-2.0",
      "ZPL-2.1",
      "Zed",
      "Zeeff",
      "Zend-2.0",
      "Zimbra-1.3",
      "Zimbra-1.4",
      "Zlib",
      "any-OSI",
      "any-OSI-perl-modules",
      "atc-game",
      "bcrypt-Solar-Designer",
      "blessing",
      "bzip2-1.0.6",
      "check-cvs",
      "checkmk",
      "copyleft-next-0.3.0",
      "copyleft-next-0.3.1",
      "curl",
      "cve-tou",
      "diffmark",
      "dtoa",
      "dvipdfm",
      "eGenix",
      "etalab-2.0",
      "fwlw",
      "gSOAP-1.3b",
      "generic-xts",
      "gnuplot",
      "gtkbook",
      "hdparm",
      "hyphen-bulgarian",
      "iMatix",
      "jove",
      "libpng-1.6.35",
      "libpng-2.0",
      "libselinux-1.0",
      "libtiff",
      "libutil-David-Nugent",
      "lsof",
      "magaz",
      "mailprio",
      "man2html",
      "metamail",
      "mpi-permissive",
      "mpich2",
      "mplus",
      "ngrep",
      "pkgconf",
      "pnmstitch",
      "psfrag",
      "psutils",
      "python-ldap",
      "radvd",
      "snprintf",
      "softSurfer",
      "ssh-keyscan",
      "swrule",
      "threeparttable",
      "ulem",
      "w3m",
      "wwl",
      "xinetd",
      "xkeyboard-config-Zinoviev",
      "xlock",
      "xpp",
      "xzoom",
      "zlib-acknowledgement"
    ];
  }
});

// node_modules/.pnpm/spdx-license-ids@3.0.24/node_modules/spdx-license-ids/deprecated.json
var require_deprecated = __commonJS({
  "node_modules/.pnpm/spdx-license-ids@3.0.24/node_modules/spdx-license-ids/deprecated.json"(exports, module) {
    module.exports = [
      "AGPL-1.0",
      "AGPL-3.0",
      "BSD-2-Clause-FreeBSD",
      "BSD-2-Clause-NetBSD",
      "GFDL-1.1",
      "GFDL-1.2",
      "GFDL-1.3",
      "GPL-1.0",
      "GPL-2.0",
      "GPL-2.0-with-GCC-exception",
      "GPL-2.0-with-autoconf-exception",
      "GPL-2.0-with-bison-exception",
      "GPL-2.0-with-classpath-exception",
      "GPL-2.0-with-font-exception",
      "GPL-3.0",
      "GPL-3.0-with-GCC-exception",
      "GPL-3.0-with-autoconf-exception",
      "LGPL-2.0",
      "LGPL-2.1",
      "LGPL-3.0",
      "Net-SNMP",
      "Nunit",
      "StandardML-NJ",
      "bzip2-1.0.5",
      "eCos-2.0",
      "wxWindows"
    ];
  }
});

// node_modules/.pnpm/spdx-exceptions@2.5.0/node_modules/spdx-exceptions/index.json
var require_spdx_exceptions = __commonJS({
  "node_modules/.pnpm/spdx-exceptions@2.5.0/node_modules/spdx-exceptions/index.json"(exports, module) {
    module.exports = [
      "389-exception",
      "Asterisk-exception",
      "Autoconf-exception-2.0",
      "Autoconf-exception-3.0",
      "Autoconf-exception-generic",
      "Autoconf-exception-generic-3.0",
      "Autoconf-exception-macro",
      "Bison-exception-1.24",
      "Bison-exception-2.2",
      "Bootloader-exception",
      "Classpath-exception-2.0",
      "CLISP-exception-2.0",
      "cryptsetup-OpenSSL-exception",
      "DigiRule-FOSS-exception",
      "eCos-exception-2.0",
      "Fawkes-Runtime-exception",
      "FLTK-exception",
      "fmt-exception",
      "Font-exception-2.0",
      "freertos-exception-2.0",
      "GCC-exception-2.0",
      "GCC-exception-2.0-note",
      "GCC-exception-3.1",
      "Gmsh-exception",
      "GNAT-exception",
      "GNOME-examples-exception",
      "GNU-compiler-exception",
      "gnu-javamail-exception",
      "GPL-3.0-interface-exception",
      "GPL-3.0-linking-exception",
      "GPL-3.0-linking-source-exception",
      "GPL-CC-1.0",
      "GStreamer-exception-2005",
      "GStreamer-exception-2008",
      "i2p-gpl-java-exception",
      "KiCad-libraries-exception",
      "LGPL-3.0-linking-exception",
      "libpri-OpenH323-exception",
      "Libtool-exception",
      "Linux-syscall-note",
      "LLGPL",
      "LLVM-exception",
      "LZMA-exception",
      "mif-exception",
      "OCaml-LGPL-linking-exception",
      "OCCT-exception-1.0",
      "OpenJDK-assembly-exception-1.0",
      "openvpn-openssl-exception",
      "PS-or-PDF-font-exception-20170817",
      "QPL-1.0-INRIA-2004-exception",
      "Qt-GPL-exception-1.0",
      "Qt-LGPL-exception-1.1",
      "Qwt-exception-1.0",
      "SANE-exception",
      "SHL-2.0",
      "SHL-2.1",
      "stunnel-exception",
      "SWI-exception",
      "Swift-exception",
      "Texinfo-exception",
      "u-boot-exception-2.0",
      "UBDL-exception",
      "Universal-FOSS-exception-1.0",
      "vsftpd-openssl-exception",
      "WxWindows-exception-3.1",
      "x11vnc-openssl-exception"
    ];
  }
});

// node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/scan.js
var require_scan = __commonJS({
  "node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/scan.js"(exports, module) {
    "use strict";
    init_define_TSBUILD_NATIVE_VERSIONS();
    var licenses = [].concat(require_spdx_license_ids()).concat(require_deprecated());
    var exceptions = require_spdx_exceptions();
    module.exports = function(source) {
      var index = 0;
      function hasMore() {
        return index < source.length;
      }
      function read(value) {
        if (value instanceof RegExp) {
          var chars = source.slice(index);
          var match = chars.match(value);
          if (match) {
            index += match[0].length;
            return match[0];
          }
        } else {
          if (source.indexOf(value, index) === index) {
            index += value.length;
            return value;
          }
        }
      }
      function skipWhitespace() {
        read(/[ ]*/);
      }
      function operator() {
        var string;
        var possibilities = [/^WITH/i, /^AND/i, /^OR/i, "(", ")", ":", "+"];
        for (var i = 0; i < possibilities.length; i++) {
          string = read(possibilities[i]);
          if (string) {
            break;
          }
        }
        if (string === "+" && index > 1 && source[index - 2] === " ") {
          throw new Error("Space before `+`");
        }
        return string && {
          type: "OPERATOR",
          string: string.toUpperCase()
        };
      }
      function idstring() {
        return read(/[A-Za-z0-9-.]+/);
      }
      function expectIdstring() {
        var string = idstring();
        if (!string) {
          throw new Error("Expected idstring at offset " + index);
        }
        return string;
      }
      function documentRef() {
        if (read("DocumentRef-")) {
          var string = expectIdstring();
          return { type: "DOCUMENTREF", string };
        }
      }
      function licenseRef() {
        if (read("LicenseRef-")) {
          var string = expectIdstring();
          return { type: "LICENSEREF", string };
        }
      }
      function identifier() {
        var begin = index;
        var string = idstring();
        if (licenses.indexOf(string) !== -1) {
          return {
            type: "LICENSE",
            string
          };
        } else if (exceptions.indexOf(string) !== -1) {
          return {
            type: "EXCEPTION",
            string
          };
        }
        index = begin;
      }
      function parseToken() {
        return operator() || documentRef() || licenseRef() || identifier();
      }
      var tokens = [];
      while (hasMore()) {
        skipWhitespace();
        if (!hasMore()) {
          break;
        }
        var token = parseToken();
        if (!token) {
          throw new Error("Unexpected `" + source[index] + "` at offset " + index);
        }
        tokens.push(token);
      }
      return tokens;
    };
  }
});

// node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/parse.js
var require_parse = __commonJS({
  "node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/parse.js"(exports, module) {
    "use strict";
    init_define_TSBUILD_NATIVE_VERSIONS();
    module.exports = function(tokens) {
      var index = 0;
      function hasMore() {
        return index < tokens.length;
      }
      function token() {
        return hasMore() ? tokens[index] : null;
      }
      function next() {
        if (!hasMore()) {
          throw new Error();
        }
        index++;
      }
      function parseOperator(operator) {
        var t = token();
        if (t && t.type === "OPERATOR" && operator === t.string) {
          next();
          return t.string;
        }
      }
      function parseWith() {
        if (parseOperator("WITH")) {
          var t = token();
          if (t && t.type === "EXCEPTION") {
            next();
            return t.string;
          }
          throw new Error("Expected exception after `WITH`");
        }
      }
      function parseLicenseRef() {
        var begin = index;
        var string = "";
        var t = token();
        if (t.type === "DOCUMENTREF") {
          next();
          string += "DocumentRef-" + t.string + ":";
          if (!parseOperator(":")) {
            throw new Error("Expected `:` after `DocumentRef-...`");
          }
        }
        t = token();
        if (t === null) {
          throw new Error("Unexpected end of input");
        }
        if (t.type === "LICENSEREF") {
          next();
          string += "LicenseRef-" + t.string;
          var node3 = { license: string };
          var exception = parseWith();
          if (exception) {
            node3.exception = exception;
          }
          return node3;
        }
        index = begin;
      }
      function parseLicense() {
        var t = token();
        if (t && t.type === "LICENSE") {
          next();
          var node3 = { license: t.string };
          if (parseOperator("+")) {
            node3.plus = true;
          }
          var exception = parseWith();
          if (exception) {
            node3.exception = exception;
          }
          return node3;
        }
      }
      function parseParenthesizedExpression() {
        var left = parseOperator("(");
        if (!left) {
          return;
        }
        var expr = parseExpression();
        if (!parseOperator(")")) {
          throw new Error("Expected `)`");
        }
        return expr;
      }
      function parseAtom() {
        return parseParenthesizedExpression() || parseLicenseRef() || parseLicense();
      }
      function makeBinaryOpParser(operator, nextParser) {
        return function parseBinaryOp() {
          var left = nextParser();
          if (!left) {
            return;
          }
          if (!parseOperator(operator)) {
            return left;
          }
          var right = parseBinaryOp();
          if (!right) {
            throw new Error("Expected expression");
          }
          return {
            left,
            conjunction: operator.toLowerCase(),
            right
          };
        };
      }
      var parseAnd = makeBinaryOpParser("AND", parseAtom);
      var parseExpression = makeBinaryOpParser("OR", parseAnd);
      var node2 = parseExpression();
      if (!node2 || hasMore()) {
        throw new Error("Syntax error");
      }
      return node2;
    };
  }
});

// node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/index.js
var require_spdx_expression_parse = __commonJS({
  "node_modules/.pnpm/spdx-expression-parse@5.0.0/node_modules/spdx-expression-parse/index.js"(exports, module) {
    "use strict";
    init_define_TSBUILD_NATIVE_VERSIONS();
    var scan = require_scan();
    var parse2 = require_parse();
    module.exports = function(source) {
      return parse2(scan(source));
    };
  }
});

// packages/action/src/main.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { spawnSync } from "node:child_process";
import { homedir as homedir3 } from "node:os";
import { join as join27 } from "node:path";

// packages/action/src/action.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { relative, isAbsolute as isAbsolute3, resolve as resolvePath12 } from "node:path";
import { appendFileSync as appendFileSync2 } from "node:fs";

// packages/errors/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/errors/src/errors.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var TsbuildError = class extends Error {
  code;
  hint;
  /** Process exit code the CLI uses for this error. */
  exitCode = 1;
  constructor(code, message, options = {}) {
    super(message, options.cause === void 0 ? void 0 : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }
};
var DockerfileError = class _DockerfileError extends TsbuildError {
  file;
  range;
  excerpt;
  /** The message without the location prefix. */
  detail;
  constructor(message, options = {}) {
    const file = options.file ?? "Dockerfile";
    const loc = options.range ? `${file}:${options.range.start.line}:${options.range.start.column}` : file;
    super("DOCKERFILE", `${loc}: ${message}`, options);
    this.file = file;
    this.range = options.range;
    this.excerpt = options.excerpt;
    this.detail = message;
  }
  /** The same error attributed to another file name (the parser does not know the path). */
  withFile(file, text) {
    const excerpt = this.excerpt ?? (text !== void 0 && this.range ? excerptOf(text, this.range) : void 0);
    const opts = { file, cause: this.cause };
    if (this.hint !== void 0) opts.hint = this.hint;
    if (this.range !== void 0) opts.range = this.range;
    if (excerpt !== void 0) opts.excerpt = excerpt;
    return new _DockerfileError(this.detail, opts);
  }
};
function excerptOf(text, range) {
  const lines = text.split(/\r?\n/);
  const from = Math.max(1, range.start.line);
  const to = Math.min(lines.length, Math.max(from, range.end.line), from + 4);
  return lines.slice(from - 1, to).join("\n");
}
var RegistryError = class extends TsbuildError {
  status;
  ociCode;
  temporary;
  reference;
  constructor(message, options = {}) {
    super("REGISTRY", redactSecrets(message), options);
    this.status = options.status;
    this.ociCode = options.ociCode;
    this.temporary = options.temporary ?? false;
    this.reference = options.reference;
  }
};
function redactSecrets(text) {
  return text.replace(/(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 [redacted]").replace(/\b((?:access_)?token|password|passwd|secret|auth)=([^&\s"']+)/gi, "$1=[redacted]").replace(/\/\/([^/@\s:]+):([^/@\s]+)@/g, "//[redacted]@");
}
var UnsafeArchiveError = class extends TsbuildError {
  entry;
  constructor(message, options = {}) {
    super("UNSAFE_ARCHIVE", message, options);
    this.entry = options.entry;
  }
};
var UsageError = class extends TsbuildError {
  constructor(message, options = {}) {
    super("USAGE", message, options);
    this.exitCode = 2;
  }
};
var InternalError = class extends TsbuildError {
  constructor(message, options = {}) {
    super("INTERNAL", message, options);
    this.exitCode = 70;
  }
};
var CancelledError = class extends TsbuildError {
  constructor(message = "cancelled", options = {}) {
    super("CANCELLED", message, options);
    this.exitCode = 130;
  }
};

// packages/builder/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/builder/src/build.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readdir as readdir12 } from "node:fs/promises";
import { join as join26 } from "node:path";

// packages/oci/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/oci/src/digest.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash } from "node:crypto";
var DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
function parseDigest(s) {
  if (!DIGEST_RE.test(s)) {
    throw new TsbuildError("BAD_DIGEST", `invalid digest ${JSON.stringify(s.slice(0, 100))}: expected sha256:<64 hex digits>`);
  }
  return s;
}
function isDigest(s) {
  return typeof s === "string" && DIGEST_RE.test(s);
}
function digestHex(d) {
  return d.slice("sha256:".length);
}
function sha256(data) {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

// packages/oci/src/types.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var MediaType = {
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayout: "application/vnd.oci.layout.header.v1+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  DockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
};
var MAX_MANIFEST_SIZE = 4 * 1024 * 1024;
var MAX_JSON_BLOB_SIZE = 16 * 1024 * 1024;
var ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";

// packages/oci/src/json.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function canonicalJson(value) {
  return Buffer.from(canonicalString(value), "utf8");
}
function canonicalString(value) {
  return JSON.stringify(sortKeys(value));
}
function sortKeys(value) {
  if (Array.isArray(value)) return value.map((v) => v === void 0 ? null : sortKeys(v));
  if (value !== null && typeof value === "object") {
    const src = value;
    const out = {};
    for (const k of Object.keys(src).sort()) {
      const v = src[k];
      if (v !== void 0) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

// packages/oci/src/media.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function isIndexMediaType(mt) {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}
function isManifestMediaType(mt) {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}
var OCI_LAYER_RE = /^application\/vnd\.oci\.image\.layer\.(?:nondistributable\.)?v1\.tar(?:\+(gzip|zstd))?$/;
var DOCKER_LAYER_RE = /^application\/vnd\.docker\.image\.rootfs\.(?:foreign\.)?diff\.tar(?:\.(gzip))?$/;
function layerCompression(mediaType) {
  const m = OCI_LAYER_RE.exec(mediaType) ?? DOCKER_LAYER_RE.exec(mediaType);
  if (!m) {
    throw new TsbuildError("UNSUPPORTED_MEDIA_TYPE", `unsupported layer media type ${JSON.stringify(mediaType)}`, {
      hint: "tsbuild reads OCI and Docker schema2 layers (tar, tar+gzip, tar+zstd)"
    });
  }
  return m[1] === "gzip" ? "gzip" : m[1] === "zstd" ? "zstd" : "none";
}
function layerMediaType(compression) {
  switch (compression) {
    case "none":
      return MediaType.OciLayer;
    case "gzip":
      return MediaType.OciLayerGzip;
    case "zstd":
      return MediaType.OciLayerZstd;
  }
}

// packages/oci/src/build.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function descriptorFor(mediaType, bytes, annotations) {
  const d = { mediaType, digest: sha256(bytes), size: bytes.byteLength };
  if (annotations && Object.keys(annotations).length > 0) d.annotations = { ...annotations };
  return d;
}
function plain(d) {
  const out = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = { ...d.annotations };
  if (d.platform) out.platform = { ...d.platform };
  if (d.urls) out.urls = [...d.urls];
  if (d.artifactType) out.artifactType = d.artifactType;
  return out;
}
function buildManifest(config, layers, annotations) {
  const docker = config.mediaType === MediaType.DockerConfig;
  const m = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: plain(config),
    layers: layers.map(plain)
  };
  if (!docker && annotations && Object.keys(annotations).length > 0) m.annotations = { ...annotations };
  return m;
}
function buildIndex(manifests, annotations) {
  const idx = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: manifests.map(plain) };
  if (annotations && Object.keys(annotations).length > 0) idx.annotations = { ...annotations };
  return idx;
}
function serialize(mediaType, value) {
  const bytes = canonicalJson(value);
  return { bytes, descriptor: descriptorFor(mediaType, bytes) };
}
function chainIds(diffIds2) {
  const out = [];
  let prev;
  for (const d of diffIds2) {
    prev = prev === void 0 ? d : sha256(`${prev} ${d}`);
    out.push(prev);
  }
  return out;
}

// packages/oci/src/parse.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var Checker = class {
  constructor(code, what) {
    this.code = code;
    this.what = what;
  }
  code;
  what;
  fail(path8, problem) {
    throw new TsbuildError(this.code, `${this.what}: ${path8 ? `${path8} ` : ""}${problem}`);
  }
  obj(v, path8) {
    if (v === null || typeof v !== "object" || Array.isArray(v)) this.fail(path8, `must be an object, got ${kind(v)}`);
    return v;
  }
  str(v, path8) {
    if (typeof v !== "string") this.fail(path8, `must be a string, got ${kind(v)}`);
    return v;
  }
  optStr(v, path8) {
    return v === void 0 ? void 0 : this.str(v, path8);
  }
  bool(v, path8) {
    if (typeof v !== "boolean") this.fail(path8, `must be a boolean, got ${kind(v)}`);
    return v;
  }
  size(v, path8) {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) this.fail(path8, `must be a non-negative integer, got ${short(v)}`);
    return v;
  }
  int(v, path8) {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) this.fail(path8, `must be an integer, got ${short(v)}`);
    return v;
  }
  digest(v, path8) {
    if (!isDigest(v)) this.fail(path8, `must be a sha256 digest (sha256:<64 hex>), got ${short(v)}`);
    return v;
  }
  arr(v, path8) {
    if (!Array.isArray(v)) this.fail(path8, `must be an array, got ${kind(v)}`);
    return v;
  }
  strArr(v, path8) {
    return this.arr(v, path8).map((x, i) => this.str(x, `${path8}[${i}]`));
  }
  strMap(v, path8) {
    const o = this.obj(v, path8);
    const out = {};
    for (const [k, x] of Object.entries(o)) out[k] = this.str(x, `${path8}[${JSON.stringify(k)}]`);
    return out;
  }
  emptyObjMap(v, path8) {
    const o = this.obj(v, path8);
    const out = {};
    for (const k of Object.keys(o)) {
      this.obj(o[k], `${path8}[${JSON.stringify(k)}]`);
      out[k] = {};
    }
    return out;
  }
  platform(v, path8) {
    const o = this.obj(v, path8);
    const p = { architecture: this.str(o.architecture, `${path8}.architecture`), os: this.str(o.os, `${path8}.os`) };
    if (o.variant !== void 0) p.variant = this.str(o.variant, `${path8}.variant`);
    if (o["os.version"] !== void 0) p["os.version"] = this.str(o["os.version"], `${path8}.os.version`);
    if (o["os.features"] !== void 0) p["os.features"] = this.strArr(o["os.features"], `${path8}.os.features`);
    return p;
  }
  descriptor(v, path8) {
    const o = this.obj(v, path8);
    const d = {
      mediaType: this.str(o.mediaType, `${path8}.mediaType`),
      digest: this.digest(o.digest, `${path8}.digest`),
      size: this.size(o.size, `${path8}.size`)
    };
    if (o.annotations !== void 0) d.annotations = this.strMap(o.annotations, `${path8}.annotations`);
    if (o.platform !== void 0) d.platform = this.platform(o.platform, `${path8}.platform`);
    if (o.urls !== void 0) d.urls = this.strArr(o.urls, `${path8}.urls`);
    if (o.artifactType !== void 0) d.artifactType = this.str(o.artifactType, `${path8}.artifactType`);
    return d;
  }
};
function kind(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "undefined" ? "nothing" : `a ${typeof v}`;
}
function short(v) {
  const s = v === void 0 ? "nothing" : JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
function parseJson(bytes, code, what) {
  const text = typeof bytes === "string" ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TsbuildError(code, `${what}: not valid JSON (${e.message})`, { cause: e });
  }
}
function label(kindName, opts) {
  return opts?.source ? `${kindName} ${opts.source}` : kindName;
}
function schemaVersion(c, v) {
  if (v !== 2) c.fail("schemaVersion", `must be 2, got ${short(v)}`);
  return 2;
}
function parseManifest(bytes, opts) {
  const what = label("manifest", opts);
  const c = new Checker("BAD_MANIFEST", what);
  const o = c.obj(parseJson(bytes, "BAD_MANIFEST", what), "");
  const m = {
    schemaVersion: schemaVersion(c, o.schemaVersion),
    config: c.descriptor(o.config, "config"),
    layers: c.arr(o.layers, "layers").map((l, i) => c.descriptor(l, `layers[${i}]`))
  };
  if (o.mediaType !== void 0) {
    m.mediaType = c.str(o.mediaType, "mediaType");
    if (!isManifestMediaType(m.mediaType)) c.fail("mediaType", `is ${short(m.mediaType)}, not an image manifest type`);
  }
  if (o.artifactType !== void 0) m.artifactType = c.str(o.artifactType, "artifactType");
  if (o.subject !== void 0) m.subject = c.descriptor(o.subject, "subject");
  if (o.annotations !== void 0) m.annotations = c.strMap(o.annotations, "annotations");
  return m;
}
function parseIndex(bytes, opts) {
  const what = label("image index", opts);
  const c = new Checker("BAD_INDEX", what);
  const o = c.obj(parseJson(bytes, "BAD_INDEX", what), "");
  const idx = {
    schemaVersion: schemaVersion(c, o.schemaVersion),
    manifests: c.arr(o.manifests, "manifests").map((d, i) => c.descriptor(d, `manifests[${i}]`))
  };
  if (o.mediaType !== void 0) {
    idx.mediaType = c.str(o.mediaType, "mediaType");
    if (!isIndexMediaType(idx.mediaType)) c.fail("mediaType", `is ${short(idx.mediaType)}, not an image index type`);
  }
  if (o.annotations !== void 0) idx.annotations = c.strMap(o.annotations, "annotations");
  return idx;
}
function nullableStrArr(c, v, path8) {
  return v === null ? null : c.strArr(v, path8);
}
function containerConfig(c, v) {
  const o = c.obj(v, "config");
  const cc = {};
  if (o.User !== void 0) cc.User = c.str(o.User, "config.User");
  if (o.ExposedPorts != null) cc.ExposedPorts = c.emptyObjMap(o.ExposedPorts, "config.ExposedPorts");
  if (o.Env != null) cc.Env = c.strArr(o.Env, "config.Env");
  if (o.Entrypoint !== void 0) cc.Entrypoint = nullableStrArr(c, o.Entrypoint, "config.Entrypoint");
  if (o.Cmd !== void 0) cc.Cmd = nullableStrArr(c, o.Cmd, "config.Cmd");
  if (o.Volumes != null) cc.Volumes = c.emptyObjMap(o.Volumes, "config.Volumes");
  if (o.WorkingDir !== void 0) cc.WorkingDir = c.str(o.WorkingDir, "config.WorkingDir");
  if (o.Labels != null) cc.Labels = c.strMap(o.Labels, "config.Labels");
  if (o.StopSignal !== void 0) cc.StopSignal = c.str(o.StopSignal, "config.StopSignal");
  if (o.ArgsEscaped !== void 0) cc.ArgsEscaped = c.bool(o.ArgsEscaped, "config.ArgsEscaped");
  if (o.OnBuild !== void 0) cc.OnBuild = nullableStrArr(c, o.OnBuild, "config.OnBuild");
  if (o.Shell != null) cc.Shell = c.strArr(o.Shell, "config.Shell");
  if (o.Healthcheck != null) {
    const h = c.obj(o.Healthcheck, "config.Healthcheck");
    const hc = {};
    if (h.Test != null) hc.Test = c.strArr(h.Test, "config.Healthcheck.Test");
    for (const k of ["Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"]) {
      if (h[k] !== void 0) hc[k] = c.int(h[k], `config.Healthcheck.${k}`);
    }
    cc.Healthcheck = hc;
  }
  return cc;
}
function parseConfig(bytes, opts) {
  const what = label("image config", opts);
  const c = new Checker("BAD_CONFIG", what);
  const o = c.obj(parseJson(bytes, "BAD_CONFIG", what), "");
  const rootfs = c.obj(o.rootfs, "rootfs");
  if (rootfs.type !== "layers") c.fail("rootfs.type", `must be "layers", got ${short(rootfs.type)}`);
  const cfg = {
    architecture: c.str(o.architecture, "architecture"),
    os: c.str(o.os, "os"),
    rootfs: {
      type: "layers",
      diff_ids: rootfs.diff_ids == null ? [] : c.arr(rootfs.diff_ids, "rootfs.diff_ids").map((d, i) => c.digest(d, `rootfs.diff_ids[${i}]`))
    }
  };
  const variant = c.optStr(o.variant, "variant");
  if (variant !== void 0) cfg.variant = variant;
  const created = c.optStr(o.created, "created");
  if (created !== void 0) cfg.created = created;
  const author = c.optStr(o.author, "author");
  if (author !== void 0) cfg.author = author;
  if (o.config != null) cfg.config = containerConfig(c, o.config);
  if (o.history != null) {
    cfg.history = c.arr(o.history, "history").map((h, i) => {
      const ho = c.obj(h, `history[${i}]`);
      const e = {};
      for (const k of ["created", "created_by", "author", "comment"]) {
        const s = c.optStr(ho[k], `history[${i}].${k}`);
        if (s !== void 0) e[k] = s;
      }
      if (ho.empty_layer !== void 0) e.empty_layer = c.bool(ho.empty_layer, `history[${i}].empty_layer`);
      return e;
    });
  }
  return cfg;
}
function sniffMediaType(bytes) {
  let v;
  try {
    v = parseJson(bytes, "BAD_MANIFEST", "manifest");
  } catch {
    return void 0;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return void 0;
  const o = v;
  if (typeof o.mediaType === "string") return o.mediaType;
  if (Array.isArray(o.manifests)) return MediaType.OciIndex;
  if (o.config !== void 0 && Array.isArray(o.layers)) return MediaType.OciManifest;
  return void 0;
}

// packages/oci/src/image.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/oci/src/platform.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var GO_ARCH = { x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
var ARCH_ALIASES = { x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64" };
function hostPlatform() {
  return { os: "linux", architecture: GO_ARCH[process.arch] ?? process.arch };
}
function parsePlatform(spec, where = "platform") {
  const parts = spec.toLowerCase().split("/");
  const [os2, arch0, variant] = parts;
  const architecture = arch0 !== void 0 ? ARCH_ALIASES[arch0] ?? arch0 : void 0;
  if (parts.length < 2 || parts.length > 3 || !os2 || !architecture || variant === "") {
    throw new UsageError(`${where}: invalid platform ${JSON.stringify(spec)}: expected os/arch[/variant], e.g. linux/amd64`);
  }
  return variant ? { os: os2, architecture, variant } : { os: os2, architecture };
}
function formatPlatform(p) {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}
function platformMatches(have, want) {
  if (have === void 0 || have.os !== want.os || have.architecture !== want.architecture) return false;
  if (want.variant === void 0) return true;
  return (have.variant ?? (have.architecture === "arm64" ? "v8" : void 0)) === want.variant;
}

// packages/store/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/store/src/store.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { homedir } from "node:os";
import { statSync } from "node:fs";
import { mkdir as mkdir2, open as open4, readFile as readFile2, readdir as readdir3, stat as stat3 } from "node:fs/promises";
import { join as join5, resolve as resolvePath4 } from "node:path";
import { Readable as Readable4 } from "node:stream";
import { pipeline as pipeline3 } from "node:stream/promises";

// packages/store/src/blob-writer.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash2 } from "node:crypto";
import { open as open2, rename as rename2, rm as rm2, utimes } from "node:fs/promises";
import { Writable } from "node:stream";
import { finished } from "node:stream/promises";

// packages/store/src/fsutil.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { randomBytes } from "node:crypto";
import { lstat, open, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
function errnoCode(e) {
  return e instanceof Error && "code" in e && typeof e.code === "string" ? e.code : void 0;
}
function tempName(dir, prefix) {
  return join(dir, `${prefix}-${process.pid}-${randomBytes(6).toString("hex")}`);
}
async function fsyncDir(dir) {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
async function writeFileAtomic(file, data, tmpDir, opts = {}) {
  const tmp = tempName(tmpDir, `${basename(file)}.tmp`);
  const fh = await open(tmp, "wx", opts.mode ?? 420);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(file));
}
async function writeFileReplacing(file, data, tmpDir) {
  const tmp = tempName(tmpDir, `${basename(file)}.tmp`);
  try {
    await writeFile(tmp, data, { mode: 420, flag: "wx" });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
async function exists(p) {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    const code = errnoCode(e);
    if (code === "ENOENT" || code === "ENOTDIR") return false;
    throw e;
  }
}

// packages/store/src/blob-writer.ts
function checkExpected(got, expected) {
  if (!expected) return;
  const badDigest = expected.digest !== void 0 && expected.digest !== got.digest;
  const badSize = expected.size !== void 0 && expected.size !== got.size;
  if (badDigest || badSize) {
    const want = `${expected.digest ?? "any digest"}${expected.size !== void 0 ? ` (${expected.size} bytes)` : ""}`;
    throw new TsbuildError("DIGEST_MISMATCH", `blob verification failed: expected ${want}, received ${got.digest} (${got.size} bytes)`);
  }
}
async function writeAll(fh, bufs) {
  let rest = bufs;
  while (rest.length > 0) {
    let { bytesWritten } = rest.length === 1 ? await fh.write(rest[0]) : await fh.writev(rest);
    let i = 0;
    while (i < rest.length && bytesWritten >= rest[i].length) bytesWritten -= rest[i++].length;
    rest = rest.slice(i);
    if (bytesWritten > 0) rest[0] = rest[0].subarray(bytesWritten);
  }
}
var FileBlobWriter = class {
  constructor(tmp, finalPath) {
    this.tmp = tmp;
    this.finalPath = finalPath;
    this.stream = new Writable({
      highWaterMark: 1 << 20,
      construct: (cb) => {
        open2(this.tmp, "wx", 420).then(
          (fh) => {
            this.fh = fh;
            cb();
          },
          (e) => cb(e)
        );
      },
      writev: (chunks, cb) => {
        const bufs = chunks.map((c) => typeof c.chunk === "string" ? Buffer.from(c.chunk, c.encoding) : c.chunk);
        for (const b of bufs) {
          this.hash.update(b);
          this.size += b.length;
        }
        writeAll(this.fh, bufs.filter((b) => b.length > 0)).then(() => cb(), (e) => cb(e));
      },
      final: (cb) => {
        this.hashed = { digest: `sha256:${this.hash.digest("hex")}`, size: this.size };
        this.stream.emit("hashed", this.hashed);
        this.fh.sync().then(() => cb(), (e) => cb(e));
      },
      destroy: (err, cb) => {
        const fh = this.fh;
        this.fh = void 0;
        if (!fh) return cb(err);
        fh.close().then(() => cb(err), () => cb(err));
      }
    });
  }
  tmp;
  finalPath;
  stream;
  hash = createHash2("sha256");
  size = 0;
  hashed;
  fh;
  settled = false;
  async commit(expected) {
    if (this.settled) throw new TsbuildError("BLOB_WRITER_CLOSED", "blob writer already committed or aborted");
    this.settled = true;
    try {
      if (!this.stream.writableEnded) this.stream.end();
      await finished(this.stream);
      const fh = this.fh;
      this.fh = void 0;
      await fh?.close();
      const got = this.hashed;
      if (got === void 0) throw new TsbuildError("BLOB_WRITER_CLOSED", "blob writer finished without hashing its content");
      checkExpected(got, expected);
      const dest = this.finalPath(got.digest);
      if (await exists(dest)) {
        await touch(dest);
        await rm2(this.tmp, { force: true });
      } else {
        await rename2(this.tmp, dest);
        await fsyncDir(dest.slice(0, dest.lastIndexOf("/")));
      }
      return got;
    } catch (e) {
      await this.cleanup();
      throw e;
    }
  }
  async abort() {
    this.settled = true;
    await this.cleanup();
  }
  async cleanup() {
    if (!this.stream.destroyed) {
      this.stream.destroy();
      await finished(this.stream).catch(() => void 0);
    }
    const fh = this.fh;
    this.fh = void 0;
    await fh?.close().catch(() => void 0);
    await rm2(this.tmp, { force: true });
  }
};
async function touch(p) {
  const now = /* @__PURE__ */ new Date();
  await utimes(p, now, now).catch((e) => {
    if (errnoCode(e) !== "ENOENT") throw e;
  });
}

// packages/store/src/lock.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { open as open3, readFile, rm as rm3, stat } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
var EMPTY_LOCK_STALE_MS = 1e4;
function readBootId() {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "-";
  }
}
function startTime(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields2 = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return fields2[19];
  } catch {
    return void 0;
  }
}
var BOOT_ID = readBootId();
var OWNER = `${process.pid} ${startTime(process.pid) ?? "-"} ${BOOT_ID}
`;
function holderAlive(content) {
  const [pidText, start, boot] = content.trim().split(" ");
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0) return void 0;
  if (boot !== void 0 && boot !== "-" && BOOT_ID !== "-" && boot !== BOOT_ID) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (errnoCode(e) === "ESRCH") return false;
  }
  if (start !== void 0 && start !== "-") {
    const now = startTime(pid);
    if (now !== void 0 && now !== start) return false;
  }
  return true;
}
async function readHolder(file) {
  try {
    return await readFile(file, "utf8");
  } catch (e) {
    if (errnoCode(e) === "ENOENT") return void 0;
    throw e;
  }
}
async function ageMs(file) {
  try {
    return Date.now() - (await stat(file)).mtimeMs;
  } catch {
    return void 0;
  }
}
async function tryCreate(file) {
  let fh;
  try {
    fh = await open3(file, "wx", 420);
  } catch (e) {
    if (errnoCode(e) === "EEXIST") return false;
    throw e;
  }
  try {
    await fh.writeFile(OWNER);
  } finally {
    await fh.close();
  }
  return true;
}
async function breakIfStale(file, seen) {
  const alive = holderAlive(seen);
  if (alive === true) return false;
  if (alive === void 0 && (await ageMs(file) ?? 0) < EMPTY_LOCK_STALE_MS) return false;
  const breaker = `${file}.break`;
  if (!await tryCreate(breaker)) {
    if ((await ageMs(breaker) ?? 0) > EMPTY_LOCK_STALE_MS) await rm3(breaker, { force: true });
    return false;
  }
  try {
    if (await readHolder(file) === seen) await rm3(file, { force: true });
  } finally {
    await rm3(breaker, { force: true });
  }
  return true;
}
var queues = /* @__PURE__ */ new Map();
async function withLock(file, fn, opts = {}) {
  const prev = queues.get(file) ?? Promise.resolve();
  let done;
  const mine = new Promise((r) => done = r);
  const tail = prev.then(() => mine);
  queues.set(file, tail);
  try {
    await prev;
    await acquire(file, opts);
    try {
      return await fn();
    } finally {
      await rm3(file, { force: true });
    }
  } finally {
    done();
    if (queues.get(file) === tail) queues.delete(file);
  }
}
async function acquire(file, opts) {
  const timeout = opts.timeoutMs ?? 12e4;
  const start = Date.now();
  let delay = 2;
  for (; ; ) {
    opts.signal?.throwIfAborted();
    if (await tryCreate(file)) return;
    const seen = await readHolder(file);
    if (seen === void 0) continue;
    if (await breakIfStale(file, seen)) continue;
    if (Date.now() - start > timeout) {
      const pid = seen.trim().split(" ")[0] || "unknown";
      throw new TsbuildError("LOCK_TIMEOUT", `timed out after ${Math.round(timeout / 1e3)} s waiting for lock ${file} held by pid ${pid}`, {
        hint: `if no tsbuild process with pid ${pid} is running, remove ${file}`
      });
    }
    await sleep(delay * (0.5 + Math.random()), void 0, { signal: opts.signal });
    delay = Math.min(delay * 2, 100);
  }
}

// packages/store/src/meta.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFileSync as readFileSync2 } from "node:fs";
import { mkdir, readdir, rm as rm4 } from "node:fs/promises";
import { join as join2 } from "node:path";
var NS_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
var MAX_PLAIN_NAME = 200;
function fileFor(key) {
  if (key.length === 0) throw new InternalError("meta key must not be empty");
  const enc = encodeURIComponent(key).replace(/\./g, "%2E").replace(/\*/g, "%2A");
  return enc.length <= MAX_PLAIN_NAME ? `k-${enc}.json` : `h-${sha256(key).slice(7)}.json`;
}
var FileMetaStore = class {
  constructor(root, namespace, tmpDir, locksDir, lockOpts = {}, options = {}) {
    this.namespace = namespace;
    this.tmpDir = tmpDir;
    this.lockOpts = lockOpts;
    this.options = options;
    if (!NS_RE.test(namespace)) throw new InternalError(`invalid meta namespace ${JSON.stringify(namespace)}`);
    this.dir = join2(root, namespace);
    this.lockFile = join2(locksDir, `meta-${namespace}.lock`);
  }
  namespace;
  tmpDir;
  lockOpts;
  options;
  dir;
  lockFile;
  async readEntry(file) {
    let text;
    try {
      text = readFileSync2(join2(this.dir, file), "utf8");
    } catch (e) {
      if (errnoCode(e) === "ENOENT") return void 0;
      throw e;
    }
    try {
      const v = JSON.parse(text);
      if (v === null || typeof v !== "object" || typeof v.key !== "string") throw new Error("not an entry");
      return v;
    } catch (e) {
      if (this.options.durable === false) return void 0;
      throw new TsbuildError("CORRUPT_METADATA", `metadata file ${join2(this.dir, file)} is corrupt: ${e.message}`, {
        hint: "remove the file; tsbuild recreates metadata it needs",
        cause: e
      });
    }
  }
  async get(key) {
    return (await this.readEntry(fileFor(key)))?.value;
  }
  async set(key, value, opts = {}) {
    await this.write(key, value, opts);
  }
  async update(key, fn, opts = {}) {
    return withLock(
      this.lockFile,
      async () => {
        const next = fn((await this.readEntry(fileFor(key)))?.value);
        if (next === void 0) await this.remove(key);
        else await this.write(key, next, opts);
        return next;
      },
      this.lockOpts
    );
  }
  async delete(key) {
    return withLock(this.lockFile, () => this.remove(key), this.lockOpts);
  }
  async keys() {
    const out = [];
    for (const f of await this.files()) {
      if (f.startsWith("k-")) out.push(decodeURIComponent(f.slice(2, -5)));
      else {
        const e = await this.readEntry(f);
        if (e) out.push(e.key);
      }
    }
    return out.sort();
  }
  /** Every blob an entry of this namespace declared as a root. */
  async roots() {
    const out = [];
    for (const f of await this.files()) {
      const e = await this.readEntry(f);
      for (const r of e?.roots ?? []) if (isDigest(r)) out.push(r);
    }
    return out;
  }
  async files() {
    try {
      return (await readdir(this.dir)).filter((f) => (f.startsWith("k-") || f.startsWith("h-")) && f.endsWith(".json"));
    } catch (e) {
      if (errnoCode(e) === "ENOENT") return [];
      throw e;
    }
  }
  async write(key, value, opts) {
    const entry = { key, value };
    if (opts.roots && opts.roots.length > 0) entry.roots = [...opts.roots];
    const text = JSON.stringify(entry);
    if (text === void 0) throw new InternalError(`meta value for ${JSON.stringify(key)} is not JSON-serialisable`);
    await mkdir(this.dir, { recursive: true });
    if (this.options.durable === false) await writeFileReplacing(join2(this.dir, fileFor(key)), text, this.tmpDir);
    else await writeFileAtomic(join2(this.dir, fileFor(key)), text, this.tmpDir);
  }
  async remove(key) {
    try {
      await rm4(join2(this.dir, fileFor(key)));
    } catch (e) {
      if (errnoCode(e) === "ENOENT") return false;
      throw e;
    }
    if (this.options.durable !== false) await fsyncDir(this.dir);
    return true;
  }
};

// packages/store/src/refs.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DOMAIN_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$/;
var COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
var TAG_RE = /^[\w][\w.-]{0,127}$/;
function bad(ref, why) {
  return new UsageError(`invalid image reference ${JSON.stringify(ref.slice(0, 300))}: ${why}`);
}
function parseRef(ref) {
  let rest = ref;
  let digest;
  const at = rest.indexOf("@");
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch {
      throw bad(ref, 'the part after "@" must be sha256:<64 hex digits>');
    }
    rest = rest.slice(0, at);
  }
  if (rest.length === 0 || rest.length > 512) throw bad(ref, "name must be 1 to 512 characters");
  const slash = rest.lastIndexOf("/");
  const last = rest.slice(slash + 1);
  const colon = last.indexOf(":");
  let repo = rest;
  let tag = "latest";
  if (colon >= 0) {
    repo = rest.slice(0, slash + 1 + colon);
    tag = last.slice(colon + 1);
  }
  if (!TAG_RE.test(tag)) throw bad(ref, `tag ${JSON.stringify(tag)} must be letters, digits, "_", "." or "-" (at most 128, not starting with "." or "-")`);
  const parts = repo.split("/");
  const first = parts[0];
  const hasDomain = parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost" || /[A-Z]/.test(first));
  if (hasDomain && !DOMAIN_RE.test(first)) throw bad(ref, `registry host ${JSON.stringify(first)} is not a valid host[:port]`);
  for (const p of hasDomain ? parts.slice(1) : parts) {
    if (!COMPONENT_RE.test(p)) throw bad(ref, `path component ${JSON.stringify(p)} must be lowercase letters and digits separated by ".", "_", "__" or "-"`);
  }
  const out = { name: `${repo}:${tag}` };
  if (digest !== void 0) out.digest = digest;
  return out;
}
function normalizeName(name) {
  const p = parseRef(name);
  if (p.digest !== void 0) throw bad(name, "a tag cannot contain a digest");
  return p.name;
}

// packages/store/src/image.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/layer/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/layer/src/diff.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { closeSync, lstatSync as lstatSync2, openSync, readSync, readdirSync as readdirSync2, readlinkSync } from "node:fs";
import { finished as finished2 } from "node:stream/promises";
import { resolve as resolvePath } from "node:path";

// packages/layer/src/tar.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var BLOCK = 512;
var TYPEFLAG = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6"
};
var XATTR_PREFIX = "SCHILY.xattr.";
var MAX_OCTAL_7 = 2097151;
var MAX_OCTAL_11 = 8589934591;
function writeOctal(buf, off, width, value) {
  const s = value.toString(8).padStart(width - 1, "0");
  buf.write(s, off, width - 1, "latin1");
  buf[off + width - 1] = 0;
}
function paxRecord(key, value) {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), "latin1"), body]);
}
function writeUstar(b, off, name, typeflag, f, linkname, uname, gname) {
  b.fill(0, off, off + BLOCK);
  if (typeof name === "string") b.write(name, off, 100, "utf8");
  else name.copy(b, off, 0, Math.min(name.length, 100));
  writeOctal(b, off + 100, 8, f.mode);
  writeOctal(b, off + 108, 8, f.uid);
  writeOctal(b, off + 116, 8, f.gid);
  writeOctal(b, off + 124, 12, f.size);
  writeOctal(b, off + 136, 12, f.mtime);
  b.write(typeflag, off + 156, 1, "latin1");
  if (typeof linkname === "string") b.write(linkname, off + 157, 100, "utf8");
  else linkname.copy(b, off + 157, 0, Math.min(linkname.length, 100));
  b.write("ustar\x0000", off + 257, 8, "latin1");
  b.write(uname, off + 265, 32, "utf8");
  b.write(gname, off + 297, 32, "utf8");
  writeOctal(b, off + 329, 8, f.devmajor);
  writeOctal(b, off + 337, 8, f.devminor);
  b.fill(32, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + BLOCK; i++) sum += b[i];
  writeOctal(b, off + 148, 7, sum);
  b[off + 155] = 32;
}
function ustarBlock(name, typeflag, f, linkname, uname, gname) {
  const b = Buffer.allocUnsafe(BLOCK);
  writeUstar(b, 0, name, typeflag, f, linkname, uname, gname);
  return b;
}
function fitsBytes(s, max) {
  return s.length * 3 <= max || Buffer.byteLength(s, "utf8") <= max;
}
function encodeHeaderInto(h, target2, off) {
  if (off + BLOCK > target2.length) return 0;
  if (h.xattrs && h.xattrs.size > 0 || h.uid > MAX_OCTAL_7 || h.gid > MAX_OCTAL_7 || h.size > MAX_OCTAL_11) return 0;
  const mtime = Math.max(0, Math.floor(h.mtime));
  const link = h.linkpath ?? "";
  const uname = h.uname ?? "";
  const gname = h.gname ?? "";
  if (mtime > MAX_OCTAL_11 || !fitsBytes(h.path, 100) || !fitsBytes(link, 100) || !fitsBytes(uname, 32) || !fitsBytes(gname, 32)) return 0;
  const f = { mode: h.mode & 4095, uid: h.uid, gid: h.gid, size: h.size, mtime, devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0 };
  writeUstar(target2, off, h.path, TYPEFLAG[h.type], f, link, uname, gname);
  return BLOCK;
}
function paxName(name) {
  const tail = name.subarray(Math.max(0, name.length - 80));
  return Buffer.concat([Buffer.from("PaxHeaders/"), tail]);
}
function encodeHeader(h) {
  const name = Buffer.from(h.path, "utf8");
  const link = Buffer.from(h.linkpath ?? "", "utf8");
  const mtime = Math.max(0, Math.floor(h.mtime));
  const records = [];
  if (name.length > 100) records.push(paxRecord("path", name));
  if (link.length > 100) records.push(paxRecord("linkpath", link));
  if (h.uid > MAX_OCTAL_7) records.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if (h.gid > MAX_OCTAL_7) records.push(paxRecord("gid", Buffer.from(String(h.gid))));
  if (h.size > MAX_OCTAL_11) records.push(paxRecord("size", Buffer.from(String(h.size))));
  if (mtime > MAX_OCTAL_11) records.push(paxRecord("mtime", Buffer.from(String(mtime))));
  if (h.xattrs && h.xattrs.size > 0) {
    const keys = [...h.xattrs.keys()].sort(compareUtf8);
    for (const k of keys) records.push(paxRecord(XATTR_PREFIX + k, h.xattrs.get(k)));
  }
  const fields2 = {
    mode: h.mode & 4095,
    uid: h.uid > MAX_OCTAL_7 ? 0 : h.uid,
    gid: h.gid > MAX_OCTAL_7 ? 0 : h.gid,
    size: h.size > MAX_OCTAL_11 ? 0 : h.size,
    mtime: mtime > MAX_OCTAL_11 ? 0 : mtime,
    devmajor: h.devmajor ?? 0,
    devminor: h.devminor ?? 0
  };
  const uname = truncateUtf8(h.uname ?? "", 32);
  const gname = truncateUtf8(h.gname ?? "", 32);
  const main2 = ustarBlock(name.subarray(0, 100), TYPEFLAG[h.type], fields2, link.subarray(0, 100), uname, gname);
  if (records.length === 0) return main2;
  const pax = Buffer.concat(records);
  const paxFields = { mode: 420, uid: 0, gid: 0, size: pax.length, mtime: fields2.mtime, devmajor: 0, devminor: 0 };
  const paxHeader = ustarBlock(paxName(name), "x", paxFields, Buffer.alloc(0), "", "");
  return Buffer.concat([paxHeader, pax, Buffer.alloc(padding(pax.length)), main2]);
}
function truncateUtf8(s, max) {
  if (fitsBytes(s, max)) return s;
  let out = "";
  for (const ch of s) {
    if (Buffer.byteLength(out + ch, "utf8") > max) break;
    out += ch;
  }
  return out;
}
function padding(size) {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}
function endOfArchive() {
  return Buffer.alloc(2 * BLOCK);
}
function compareUtf8(a, b) {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}
var ByteSource = class {
  constructor(it, onBytes) {
    this.it = it;
    this.onBytes = onBytes;
  }
  it;
  onBytes;
  buf = Buffer.alloc(0);
  done = false;
  consumed = 0;
  async fill() {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const chunk = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
    this.onBytes?.(chunk);
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    return true;
  }
  /** Exactly n bytes, or fewer only at the end of the input. */
  async read(n) {
    while (this.buf.length < n && await this.fill()) ;
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }
  /** Up to n bytes as they arrive, at least one unless at the end. */
  async readSome(n) {
    if (this.buf.length === 0) await this.fill();
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }
  /** Stops the source (destroying a stream) when reading ends early or fails. */
  async close() {
    await this.it.return?.();
  }
  /** Reads what is left so a hash over the whole input is complete. */
  async drain() {
    this.consumed += this.buf.length;
    this.buf = Buffer.alloc(0);
    while (await this.fill()) {
      this.consumed += this.buf.length;
      this.buf = Buffer.alloc(0);
    }
  }
};
function cstring(b) {
  const nul = b.indexOf(0);
  return nul === -1 ? b : b.subarray(0, nul);
}
function parseNumeric(b, field) {
  if (b.length > 0 && (b[0] & 128) !== 0) {
    if ((b[0] & 64) !== 0) throw new UnsafeArchiveError(`tar header: negative ${field}`);
    let v = b[0] & 63;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i];
    if (!Number.isSafeInteger(v)) throw new UnsafeArchiveError(`tar header: ${field} too large`);
    return v;
  }
  const s = cstring(b).toString("latin1").trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new UnsafeArchiveError(`tar header: invalid ${field} ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}
function parsePax(data) {
  const out = /* @__PURE__ */ new Map();
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(32, off);
    if (sp === -1) throw new UnsafeArchiveError("tar: malformed PAX record (no length)");
    const len = Number(data.toString("latin1", off, sp));
    if (!Number.isInteger(len) || len <= sp - off + 1 || off + len > data.length) {
      throw new UnsafeArchiveError("tar: malformed PAX record length");
    }
    const rec = data.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 10) throw new UnsafeArchiveError("tar: PAX record not newline-terminated");
    const eq = rec.indexOf(61);
    if (eq === -1) throw new UnsafeArchiveError('tar: PAX record without "="');
    out.set(rec.toString("utf8", 0, eq), rec.subarray(eq + 1, rec.length - 1));
    off += len;
  }
  return out;
}
var TYPES = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo"
};
var MAX_META = 16 * 1024 * 1024;
async function* readTar(source, opts = {}) {
  const src = new ByteSource(source[Symbol.asyncIterator](), opts.onBytes);
  const global = /* @__PURE__ */ new Map();
  let pax;
  let gnuName;
  let gnuLink;
  try {
    for (; ; ) {
      opts.signal?.throwIfAborted();
      const block = await src.read(BLOCK);
      if (block.length === 0) return;
      if (block.length < BLOCK) throw new UnsafeArchiveError("tar: truncated header");
      if (block.every((x) => x === 0)) {
        await src.drain();
        return;
      }
      verifyChecksum(block);
      const flag = String.fromCharCode(block[156]);
      const size = parseNumeric(block.subarray(124, 136), "size");
      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        if (size > MAX_META) throw new UnsafeArchiveError(`tar: ${size}-byte metadata entry is too large`);
        const data = await src.read(size);
        if (data.length < size) throw new UnsafeArchiveError("tar: truncated metadata entry");
        await src.read(padding(size));
        if (flag === "x") pax = new Map([...pax ?? [], ...parsePax(data)]);
        else if (flag === "g") for (const [k, v] of parsePax(data)) global.set(k, v);
        else if (flag === "L") gnuName = cstring(data);
        else gnuLink = cstring(data);
        continue;
      }
      const rec = new Map([...global, ...pax ?? []]);
      pax = void 0;
      let type = TYPES[flag];
      const isUstar = block.toString("latin1", 257, 262) === "ustar";
      let name = cstring(block.subarray(0, 100));
      const prefix = isUstar && block.toString("latin1", 257, 263) === "ustar\0" ? cstring(block.subarray(345, 500)) : Buffer.alloc(0);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from("/"), name]);
      const path8 = rec.get("path")?.toString("utf8") ?? gnuName?.toString("utf8") ?? name.toString("utf8");
      const linkpath = rec.get("linkpath")?.toString("utf8") ?? gnuLink?.toString("utf8") ?? cstring(block.subarray(157, 257)).toString("utf8");
      gnuName = gnuLink = void 0;
      if (flag === "\0" && path8.endsWith("/")) type = "dir";
      if (type === void 0) {
        throw new UnsafeArchiveError(`tar: entry ${JSON.stringify(path8)} has unsupported type ${JSON.stringify(flag)}`, { entry: path8 });
      }
      const num = (key, off, len, field) => {
        const v = rec.get(key);
        if (v !== void 0) {
          const n = Number(v.toString("latin1"));
          if (!Number.isSafeInteger(n) || n < 0) throw new UnsafeArchiveError(`tar: invalid PAX ${key} for ${JSON.stringify(path8)}`, { entry: path8 });
          return n;
        }
        return parseNumeric(block.subarray(off, off + len), field);
      };
      const mtimeRec = rec.get("mtime");
      const bodySize = type === "file" ? num("size", 124, 12, "size") : 0;
      const header = {
        path: path8,
        type,
        mode: parseNumeric(block.subarray(100, 108), "mode") & 4095,
        uid: num("uid", 108, 8, "uid"),
        gid: num("gid", 116, 8, "gid"),
        size: bodySize,
        mtime: mtimeRec !== void 0 ? Math.floor(Number(mtimeRec.toString("latin1"))) || 0 : parseNumeric(block.subarray(136, 148), "mtime"),
        uname: rec.get("uname")?.toString("utf8") ?? cstring(block.subarray(265, 297)).toString("utf8"),
        gname: rec.get("gname")?.toString("utf8") ?? cstring(block.subarray(297, 329)).toString("utf8")
      };
      if (type === "symlink" || type === "hardlink") header.linkpath = linkpath;
      if (type === "char" || type === "block") {
        header.devmajor = parseNumeric(block.subarray(329, 337), "devmajor");
        header.devminor = parseNumeric(block.subarray(337, 345), "devminor");
      }
      const xattrs = /* @__PURE__ */ new Map();
      for (const [k, v] of rec) if (k.startsWith(XATTR_PREFIX)) xattrs.set(k.slice(XATTR_PREFIX.length), v);
      if (xattrs.size > 0) header.xattrs = xattrs;
      const stored = type === "file" ? bodySize : num("size", 124, 12, "size");
      let remaining = stored;
      const body = {
        async *[Symbol.asyncIterator]() {
          if (type !== "file") return;
          while (remaining > 0) {
            const chunk = await src.readSome(Math.min(remaining, 1 << 20));
            if (chunk.length === 0) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path8)} is truncated`, { entry: path8 });
            remaining -= chunk.length;
            yield chunk;
          }
        }
      };
      yield { header, body };
      while (remaining > 0) {
        const chunk = await src.readSome(Math.min(remaining, 1 << 20));
        if (chunk.length === 0) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path8)} is truncated`, { entry: path8 });
        remaining -= chunk.length;
      }
      const pad = await src.read(padding(stored));
      if (pad.length < padding(stored)) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path8)} is truncated`, { entry: path8 });
    }
  } finally {
    await src.close();
  }
}
function headerChecksums(block) {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 32 : block[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return { unsigned, signed };
}
function verifyChecksum(block) {
  const stored = parseNumeric(block.subarray(148, 156), "checksum");
  const { unsigned, signed } = headerChecksums(block);
  if (stored !== unsigned && stored !== signed) throw new UnsafeArchiveError("tar: header checksum mismatch (not a tar archive, or corrupt)");
}
function isTarHeader(block) {
  if (block.length < BLOCK) return false;
  if (block.subarray(0, BLOCK).every((b) => b === 0)) return false;
  const field = Buffer.from(block.subarray(148, 156)).toString("latin1").replace(/[\0 ]+$/, "").trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const want = parseInt(field, 8);
  const { unsigned, signed } = headerChecksums(block);
  return want === unsigned || want === signed;
}

// packages/layer/src/xattr.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { lstatSync, readdirSync } from "node:fs";

// tsbuild-native:@napi-rs/xattr
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/action/src/native.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join as join3 } from "node:path";
var loaded = /* @__PURE__ */ new Map();
function versions() {
  return typeof define_TSBUILD_NATIVE_VERSIONS_default === "undefined" ? {} : define_TSBUILD_NATIVE_VERSIONS_default;
}
function nativeCacheDir(env = process.env) {
  const base = env.TSBUILD_NATIVE_CACHE || env.RUNNER_TOOL_CACHE || env.RUNNER_TEMP || tmpdir();
  const key = Object.entries(versions()).map(([n, v]) => `${n.replace(/[@/]/g, "_")}-${v}`).join("+") || "unversioned";
  return join3(base, "tsbuild-native", `${process.platform}-${process.arch}-node${process.versions.modules}`, key);
}
function tryRequire(from, name) {
  try {
    return createRequire(from)(name);
  } catch (e) {
    if (e.code === "MODULE_NOT_FOUND") return void 0;
    throw e;
  }
}
function loadNative(name) {
  const hit = loaded.get(name);
  if (hit !== void 0) return hit;
  const env = process.env;
  let mod;
  if (env.TSBUILD_NATIVE_DIR) mod = tryRequire(join3(env.TSBUILD_NATIVE_DIR, "noop.js"), name);
  mod ??= tryRequire(import.meta.url, name);
  if (mod === void 0) {
    const dir = nativeCacheDir(env);
    const anchor = join3(dir, "noop.js");
    mod = tryRequire(anchor, name);
    if (mod === void 0) {
      const version = versions()[name];
      if (version === void 0) throw new TsbuildError("NATIVE_MODULE", `${name} is not installed and this build of tsbuild does not pin its version`);
      mkdirSync(dir, { recursive: true });
      const spec = `${name}@${version}`;
      process.stderr.write(`tsbuild: installing ${spec} into ${dir}
`);
      const npmEnv = { ...env };
      if (npmEnv.npm_config_nodedir === void 0 && existsSync("/usr/include/node/node.h")) npmEnv.npm_config_nodedir = "/usr";
      try {
        execFileSync("npm", ["install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock", "--prefix", dir, spec], {
          stdio: ["ignore", "ignore", "inherit"],
          env: npmEnv
        });
      } catch (e) {
        throw new TsbuildError("NATIVE_MODULE", `cannot install ${spec}: ${e.message}`, {
          hint: `install it yourself and point TSBUILD_NATIVE_DIR at the directory holding node_modules/${name}`,
          cause: e
        });
      }
      mod = tryRequire(anchor, name);
      if (mod === void 0) throw new TsbuildError("NATIVE_MODULE", `${spec} was installed into ${dir} but cannot be loaded`);
    }
  }
  loaded.set(name, mod);
  return mod;
}

// tsbuild-native:@napi-rs/xattr
function getAttributeSync(...a) {
  return loadNative("@napi-rs/xattr").getAttributeSync(...a);
}
function listAttributesSync(...a) {
  return loadNative("@napi-rs/xattr").listAttributesSync(...a);
}
function setAttributeSync(...a) {
  return loadNative("@napi-rs/xattr").setAttributeSync(...a);
}

// packages/layer/src/xattr.ts
function errnoOf(e) {
  const m = /\(os error (\d+)\)/.exec(e instanceof Error ? e.message : String(e));
  return m ? Number(m[1]) : void 0;
}
var ENOENT = 2;
var ENOTDIR = 20;
var EOPNOTSUPP = 95;
function readXattrs(path8, keep) {
  let names2;
  try {
    names2 = listAttributesSync(path8);
  } catch (e) {
    const errno = errnoOf(e);
    if (errno === EOPNOTSUPP || errno === ENOENT || errno === ENOTDIR) return void 0;
    if (e instanceof Error && /Invalid attribute/.test(e.message)) {
      throw new TsbuildError("UNSUPPORTED_NAME", `${path8} has an extended attribute whose name is not valid UTF-8`, { cause: e });
    }
    throw new TsbuildError("XATTR", `cannot list the extended attributes of ${path8}: ${e.message}`, { cause: e });
  }
  if (names2.length === 0) return void 0;
  let out;
  for (const name of names2.sort()) {
    const value = getAttributeSync(path8, name);
    if (value === null) continue;
    if (keep && !keep(path8, name, value)) continue;
    (out ??= /* @__PURE__ */ new Map()).set(name, value);
  }
  return out;
}
async function readXattrTree(root, opts = {}) {
  const { signal, keep } = opts;
  signal?.throwIfAborted();
  const table = /* @__PURE__ */ new Map();
  const visit = (path8) => {
    const attrs = readXattrs(path8, keep);
    if (attrs) table.set(path8, attrs);
  };
  visit(root);
  const dirs = [];
  if (isDirectory(root)) dirs.push(root);
  while (dirs.length > 0) {
    const dir = dirs.pop();
    signal?.throwIfAborted();
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      if (e.code === "ENOENT") continue;
      throw e;
    }
    const prefix = dir.endsWith("/") ? dir : dir + "/";
    for (const entry of entries) {
      const path8 = prefix + entry.name;
      visit(path8);
      if (entry.isDirectory()) dirs.push(path8);
    }
  }
  return table;
}
function isDirectory(path8) {
  return lstatSync(path8, { throwIfNoEntry: false })?.isDirectory() ?? false;
}
async function writeXattrs(entries, opts = {}) {
  const failures = [];
  let failed = 0;
  let first;
  for (const [path8, attrs] of entries) {
    opts.signal?.throwIfAborted();
    for (const [name, value] of attrs) {
      try {
        setAttributeSync(path8, name, value);
      } catch (e) {
        failed++;
        first ??= e;
        if (failures.length < 5) failures.push(`${name} on ${path8}: ${e.message}`);
      }
    }
  }
  if (failed > 0) {
    throw new TsbuildError("XATTR", `cannot set ${failed} extended attribute${failed === 1 ? "" : "s"}: ${failures.join("; ")}${failed > failures.length ? "; \u2026" : ""}`, {
      cause: first
    });
  }
}

// packages/layer/src/batches.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash3 } from "node:crypto";
import { Duplex } from "node:stream";
var CHUNK = 1 << 20;
var MAX_IN_FLIGHT = 2;
var SPARE_BATCHES = 3;
var SENDS_PER_TURN = 64;
function drained(out, what = "destination") {
  if (out.destroyed) return Promise.reject(out.errored ?? new Error(`${what} closed early`));
  return new Promise((resolve3, reject) => {
    const done = (err) => {
      out.off("drain", onDrain);
      out.off("error", done);
      out.off("close", onClose);
      if (err) reject(err);
      else resolve3();
    };
    const onDrain = () => done();
    const onClose = () => done(out.errored ?? new Error(`${what} closed early`));
    out.on("drain", onDrain);
    out.on("error", done);
    out.on("close", onClose);
  });
}
var BatchedOutput = class {
  constructor(out, opts = {}) {
    this.out = out;
    this.opts = opts;
    this.hash = opts.hash === false ? void 0 : createHash3("sha256");
    this.reuse = !(out instanceof Duplex);
    out.on("error", this.onOutError);
    out.once("close", () => {
      out.off("error", this.onOutError);
      this.woken();
    });
    opts.signal?.addEventListener("abort", this.onAbort, { once: true });
  }
  out;
  opts;
  batch = Buffer.allocUnsafe(CHUNK);
  pos = 0;
  size = 0;
  hash;
  outError;
  reuse;
  spare = [];
  inFlight = 0;
  wake;
  sends = 0;
  onOutError = (err) => {
    this.outError ??= err;
  };
  onAbort = () => void this.out.destroy();
  woken = () => {
    const w = this.wake;
    this.wake = void 0;
    w?.();
  };
  /** The first error the destination reported, if any. */
  get error() {
    return this.outError;
  }
  fits(n) {
    return this.pos + n <= CHUNK;
  }
  put(b) {
    b.copy(this.batch, this.pos);
    this.pos += b.length;
  }
  closedEarly() {
    return this.outError ?? this.out.errored ?? new Error("the layer destination closed early");
  }
  /** Sends `b`; `owner` is the batch it lies in, to be reused once released (none for a one-off buffer). */
  async send(b, owner) {
    if (this.outError || this.out.destroyed) throw this.closedEarly();
    this.hash?.update(b);
    this.size += b.length;
    let ok;
    if (this.reuse && owner) {
      this.inFlight++;
      ok = this.out.write(b, this.released(owner));
    } else ok = this.out.write(b);
    if (!ok) await drained(this.out);
    else if (++this.sends >= SENDS_PER_TURN) await this.turn();
    this.opts.signal?.throwIfAborted();
  }
  /** Sends the batch filled so far and starts the next one. */
  async flush() {
    await this.send(this.batch.subarray(0, this.pos), this.batch);
    this.batch = await this.fresh();
    this.pos = 0;
  }
  /** Gives the event loop a turn. */
  async turn() {
    this.sends = 0;
    await new Promise((r) => setImmediate(r));
  }
  /** The sha256 of everything sent, as a digest string (undefined when not hashing). */
  digest() {
    return this.hash ? `sha256:${this.hash.digest("hex")}` : void 0;
  }
  dispose() {
    this.opts.signal?.removeEventListener("abort", this.onAbort);
  }
  released(owner) {
    return (err) => {
      this.inFlight--;
      if (!err && this.spare.length < SPARE_BATCHES) this.spare.push(owner);
      this.woken();
    };
  }
  /*
   * A batch to fill: a released one, or a new one. A destination that calls back on the next tick
   * (most do, even when write() returned true) would otherwise see a new batch for every write
   * until the event loop gets a turn, and V8 lets such memory pile up before collecting it.
   */
  async fresh() {
    while (this.reuse && this.spare.length === 0 && this.inFlight >= MAX_IN_FLIGHT) {
      if (this.out.destroyed) throw this.closedEarly();
      await new Promise((resolve3) => {
        this.wake = resolve3;
      });
    }
    return this.spare.pop() ?? Buffer.allocUnsafe(CHUNK);
  }
};

// packages/layer/src/diff.ts
var WHITEOUT_PREFIX = ".wh.";
var OPAQUE_MARKER = ".wh..wh..opq";
function isOverlayXattr(name) {
  return name.startsWith("trusted.overlay.") || name.startsWith("user.overlay.") || name.startsWith("user.fuseoverlayfs.");
}
var OPAQUE_XATTRS = /* @__PURE__ */ new Set(["trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"]);
function fuseForm(name, st) {
  if (!name.startsWith(WHITEOUT_PREFIX)) return void 0;
  if (name === OPAQUE_MARKER && st.isFile() || name === ".wh..opq" && st.isCharacterDevice() && st.rdev === 0) return "marker";
  return st.isFile() && st.size === 0 ? "whiteout" : void 0;
}
function inLower(lower, rel) {
  let at = lower;
  const parts = rel.split("/");
  for (const [i, part] of parts.entries()) {
    at = `${at}/${part}`;
    const st = lstatSync2(at, { throwIfNoEntry: false });
    if (st === void 0) return false;
    if (i < parts.length - 1 && !st.isDirectory()) return false;
  }
  return true;
}
function kindOf(st) {
  if (st.isDirectory()) return "dir";
  if (st.isFile()) return "file";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isCharacterDevice()) return st.rdev === 0 ? "whiteout" : "char";
  if (st.isBlockDevice()) return "block";
  if (st.isFIFO()) return "fifo";
  return "socket";
}
function devNumbers(rdev) {
  const lo = rdev % 2 ** 32;
  const hi = Math.floor(rdev / 2 ** 32);
  return {
    devmajor: lo >>> 8 & 4095 | hi & 4294963200,
    devminor: lo & 255 | lo >>> 12 & 1048320
  };
}
function childrenOf(hostDir, relDir) {
  const out = [];
  for (const raw of readdirSync2(hostDir, { encoding: "buffer" })) {
    const name = raw.toString("utf8");
    if (!Buffer.from(name, "utf8").equals(raw)) {
      throw new TsbuildError("UNSUPPORTED_NAME", `file name ${JSON.stringify(relDir + name)} in ${hostDir} is not valid UTF-8; layers need UTF-8 names`);
    }
    const host = `${hostDir}/${name}`;
    const st = lstatSync2(host);
    const fuse = fuseForm(name, st);
    if (fuse === "marker" && (name !== OPAQUE_MARKER || readXattrs(hostDir, (_p, n, v) => OPAQUE_XATTRS.has(n) && v.toString("latin1") === "y"))) continue;
    const kind2 = fuse === void 0 ? kindOf(st) : "whiteout";
    const outName = kind2 === "whiteout" && fuse === void 0 ? WHITEOUT_PREFIX + name : name;
    const entry = {
      host,
      outPath: relDir + outName,
      kind: kind2,
      mode: st.mode & 4095,
      uid: st.uid,
      gid: st.gid,
      size: kind2 === "file" ? st.size : 0,
      mtime: Math.floor(st.mtimeMs / 1e3),
      nlink: st.nlink,
      rdev: st.rdev
    };
    out.push({ name, key: Buffer.from(kind2 === "dir" ? outName + "/" : outName, "utf8"), entry });
  }
  return out.sort((a, b) => Buffer.compare(a.key, b.key));
}
function* walk(root, exclude) {
  const stack = [{ kids: childrenOf(root, ""), i: 0, rel: "" }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const kid = top.kids[top.i];
    if (kid === void 0) {
      stack.pop();
      continue;
    }
    top.kids[top.i++] = void 0;
    if (exclude?.(top.rel + kid.name)) continue;
    yield kid.entry;
    if (kid.entry.kind === "dir") {
      const rel = kid.entry.outPath + "/";
      stack.push({ kids: childrenOf(kid.entry.host, rel), i: 0, rel });
    }
  }
}
var ENTRIES_PER_TURN = 4096;
async function diff(upperDir, out, opts = {}) {
  const root = resolvePath(upperDir);
  const signal = opts.signal;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== void 0 && (!Number.isFinite(epoch) || epoch < 0)) {
    throw new TsbuildError("BAD_SOURCE_DATE_EPOCH", `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  if (!lstatSync2(root).isDirectory()) throw new TsbuildError("NOT_A_DIRECTORY", `${upperDir} is not a directory`);
  const links = /* @__PURE__ */ new Map();
  const clamp = (m) => epoch === void 0 ? m : Math.min(m, Math.floor(epoch));
  const o = new BatchedOutput(out, { signal });
  const flush = () => o.flush();
  const fits = (n) => o.fits(n);
  let entriesSinceTurn = 0;
  const writeEntry = async (e) => {
    const { host, outPath, kind: kind2 } = e;
    const base = { uid: e.uid, gid: e.gid, mode: e.mode, mtime: clamp(e.mtime), size: 0 };
    let opaque = false;
    const attrs = kind2 === "whiteout" || kind2 === "socket" ? void 0 : readXattrs(host, (_path, name, value) => {
      if (!isOverlayXattr(name)) return true;
      if (OPAQUE_XATTRS.has(name) && value.toString("latin1") === "y") opaque = true;
      return false;
    });
    const withXattrs = (h) => attrs ? { ...h, xattrs: attrs } : h;
    const headers = [];
    const push = (h) => {
      headers.push(h);
    };
    let file;
    if (kind2 === "whiteout") {
      push({ ...base, mode: 0, path: outPath, type: "file" });
    } else if (kind2 === "dir") {
      push(withXattrs({ ...base, path: outPath + "/", type: "dir" }));
      if (opaque && (opts.lowerDirs === void 0 || opts.lowerDirs.some((l) => inLower(l, outPath)))) {
        push({ ...base, mode: 0, uid: 0, gid: 0, path: `${outPath}/${OPAQUE_MARKER}`, type: "file" });
      }
    } else if (kind2 === "socket") {
    } else {
      let linked;
      if (e.nlink > 1) {
        const big = lstatSync2(host, { bigint: true });
        const id = `${big.dev}:${big.ino}`;
        linked = links.get(id);
        if (linked === void 0) links.set(id, outPath);
      }
      if (linked !== void 0) {
        push(withXattrs({ ...base, path: outPath, type: "hardlink", linkpath: linked }));
      } else if (kind2 === "symlink") {
        push(withXattrs({ ...base, path: outPath, type: "symlink", linkpath: readlinkSync(host) }));
      } else if (kind2 === "fifo") {
        push(withXattrs({ ...base, path: outPath, type: "fifo" }));
      } else if (kind2 === "char" || kind2 === "block") {
        push(withXattrs({ ...base, path: outPath, type: kind2, ...devNumbers(e.rdev) }));
      } else {
        push(withXattrs({ ...base, path: outPath, type: "file", size: e.size }));
        file = { size: e.size };
      }
    }
    for (const h of headers) {
      if (!fits(BLOCK)) await flush();
      const n = encodeHeaderInto(h, o.batch, o.pos);
      if (n > 0) {
        o.pos += n;
        continue;
      }
      const b = encodeHeader(h);
      if (!fits(b.length)) await flush();
      if (fits(b.length)) o.put(b);
      else {
        await o.send(b, void 0);
      }
    }
    if (file && file.size > 0) {
      const fd = openSync(host, "r");
      try {
        const readExactly = (buf, off, len) => {
          let got = 0;
          while (got < len) {
            const n = readSync(fd, buf, off + got, len - got, null);
            if (n === 0) throw new TsbuildError("LAYER_SOURCE_CHANGED", `${host} shrank while it was being read (expected ${file.size} bytes)`);
            got += n;
          }
        };
        const padded = file.size + padding(file.size);
        if (padded <= CHUNK) {
          if (!fits(padded)) await flush();
          readExactly(o.batch, o.pos, file.size);
          o.batch.fill(0, o.pos + file.size, o.pos + padded);
          o.pos += padded;
        } else {
          if (o.pos > 0) await flush();
          let left = file.size;
          while (left > 0) {
            const want = Math.min(left, CHUNK);
            readExactly(o.batch, 0, want);
            o.pos = want;
            left -= want;
            if (left === 0) {
              const pad = padding(file.size);
              o.batch.fill(0, o.pos, o.pos + pad);
              o.pos += pad;
            }
            if (o.pos >= CHUNK) await flush();
          }
        }
      } finally {
        closeSync(fd);
      }
    }
    if (o.pos >= CHUNK - BLOCK) await flush();
  };
  try {
    signal?.throwIfAborted();
    for (const e of walk(root, opts.exclude)) {
      await writeEntry(e);
      if (++entriesSinceTurn >= ENTRIES_PER_TURN) {
        entriesSinceTurn = 0;
        await o.turn();
        signal?.throwIfAborted();
      }
    }
    const end = endOfArchive();
    if (!fits(end.length)) await flush();
    o.put(end);
    await flush();
    if (o.error) throw o.error;
    out.end();
    await finished2(out, { readable: false });
  } catch (e) {
    if (!out.destroyed) out.destroy(e instanceof Error ? e : new Error(String(e)));
    if (signal?.aborted) throw new CancelledError(`diff of ${upperDir} cancelled`, { cause: e });
    throw e;
  } finally {
    o.dispose();
  }
  return { diffId: o.digest(), size: o.size };
}

// packages/layer/src/entries.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { closeSync as closeSync2, constants, openSync as openSync2, readSync as readSync2 } from "node:fs";
import { finished as finished3 } from "node:stream/promises";
var EMPTY = Buffer.alloc(0);
var ENTRIES_PER_TURN2 = 4096;
function changed(path8, size) {
  return new TsbuildError("LAYER_SOURCE_CHANGED", `${path8} changed while it was being read (expected ${size} bytes)`, {
    hint: "something modified the file during the build; run the build again"
  });
}
async function writeEntries(entries, out, opts = {}) {
  const { signal } = opts;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== void 0 && (!Number.isFinite(epoch) || epoch < 0)) {
    out.destroy();
    throw new TsbuildError("BAD_SOURCE_DATE_EPOCH", `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  const clamp = epoch === void 0 ? Infinity : Math.floor(epoch);
  const done = finished3(out);
  done.catch(() => {
  });
  const o = new BatchedOutput(out, { signal, hash: opts.hash !== false });
  const flush = () => o.flush();
  try {
    signal?.throwIfAborted();
    let sinceTurn = 0;
    for (const entry of entries) {
      if (++sinceTurn >= ENTRIES_PER_TURN2) {
        sinceTurn = 0;
        await o.turn();
        signal?.throwIfAborted();
      }
      const h = entry.header.mtime > clamp ? { ...entry.header, mtime: clamp } : entry.header;
      if (o.pos + BLOCK > CHUNK) await flush();
      const n = encodeHeaderInto(h, o.batch, o.pos);
      if (n > 0) o.pos += n;
      else {
        const b = encodeHeader(h);
        if (o.pos + b.length > CHUNK) await flush();
        if (b.length <= CHUNK) {
          b.copy(o.batch, o.pos);
          o.pos += b.length;
        } else await o.send(b, void 0);
      }
      if (h.type !== "file") continue;
      const len = h.size;
      const body = entry.body;
      const onBody = entry.onBody;
      if (typeof body !== "string") {
        const bytes = body === void 0 ? EMPTY : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (bytes.length !== len) throw new TsbuildError("LAYER_ENTRY", `${h.path}: the header says ${len} bytes, the body has ${bytes.length}`);
        onBody?.(bytes, true);
        for (let off = 0; off < len; ) {
          if (o.pos === CHUNK) await flush();
          const k = Math.min(len - off, CHUNK - o.pos);
          bytes.copy(o.batch, o.pos, off, off + k);
          o.pos += k;
          off += k;
        }
      } else if (len === 0) {
        onBody?.(EMPTY, true);
      } else {
        let fd;
        try {
          fd = openSync2(body, constants.O_RDONLY);
        } catch (e) {
          throw new TsbuildError("LAYER_SOURCE", `cannot read ${body}: ${e.message}`, { cause: e });
        }
        try {
          if (len + padding(len) <= CHUNK) {
            if (o.pos + len + padding(len) > CHUNK) await flush();
            const ask = o.pos + len < CHUNK ? len + 1 : len;
            let got = 0;
            while (got < len) {
              const r = readSync2(fd, o.batch, o.pos + got, ask - got, null);
              if (r === 0) throw changed(body, len);
              got += r;
            }
            if (got > len) throw changed(body, len);
            onBody?.(o.batch.subarray(o.pos, o.pos + len), true);
            o.pos += len;
          } else {
            if (o.pos > 0) await flush();
            let left = len;
            while (left > 0) {
              const want = Math.min(left, CHUNK);
              left -= want;
              const ask = left === 0 && want < CHUNK ? want + 1 : want;
              let got = 0;
              while (got < want) {
                const r = readSync2(fd, o.batch, got, ask - got, null);
                if (r === 0) throw changed(body, len);
                got += r;
              }
              if (got > want) throw changed(body, len);
              onBody?.(o.batch.subarray(0, want), left === 0);
              o.pos = want;
              if (left > 0) await flush();
            }
          }
        } finally {
          closeSync2(fd);
        }
      }
      const pad = padding(len);
      if (o.pos + pad > CHUNK) await flush();
      o.batch.fill(0, o.pos, o.pos + pad);
      o.pos += pad;
    }
    const end = endOfArchive();
    if (o.pos + end.length > CHUNK) await flush();
    end.copy(o.batch, o.pos);
    o.pos += end.length;
    await o.send(o.batch.subarray(0, o.pos), void 0);
    out.end();
    await done;
    if (o.error) throw o.error;
  } catch (e) {
    out.destroy();
    if (signal?.aborted) throw new CancelledError("writing the layer was cancelled", { cause: e });
    throw e;
  } finally {
    o.dispose();
  }
  const diffId = o.digest();
  return diffId ? { diffId, size: o.size } : { size: o.size };
}

// packages/layer/src/apply.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import {
  closeSync as closeSync3,
  constants as fsc,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync as lstatSync4,
  lutimesSync,
  mkdirSync as mkdirSync2,
  openSync as openSync3,
  readdirSync as readdirSync3,
  readFileSync as readFileSync4,
  rmSync,
  chmodSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync
} from "node:fs";
import { createHash as createHash4 } from "node:crypto";
import { Readable as Readable2 } from "node:stream";
import { resolve as resolvePath3 } from "node:path";

// packages/layer/src/securejoin.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { lstatSync as lstatSync3, readlinkSync as readlinkSync2 } from "node:fs";
import { resolve as resolvePath2 } from "node:path";
var MAX_LINKS = 255;
function cleanArchivePath(unsafePath) {
  if (unsafePath.includes("\0")) throw new UnsafeArchiveError(`path ${JSON.stringify(unsafePath)} contains NUL`, { entry: unsafePath });
  const out = [];
  for (const part of unsafePath.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) throw new UnsafeArchiveError(`path ${JSON.stringify(unsafePath)} escapes the root`, { entry: unsafePath });
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}
function secureJoin(root, unsafe, opts = {}) {
  const absRoot = resolvePath2(root);
  const prefix = absRoot === "/" ? "" : absRoot;
  const unsafeParts = typeof unsafe === "string" ? unsafe.split("/") : unsafe;
  const done = [];
  const todo = [...unsafeParts].reverse();
  let links = 0;
  while (todo.length > 0) {
    const part = todo.pop();
    if (part === "" || part === ".") continue;
    if (part === "..") {
      done.pop();
      continue;
    }
    if (part.includes("/") || part.includes("\0")) throw new UnsafeArchiveError(`invalid path component ${JSON.stringify(part)}`);
    const isLast = todo.length === 0;
    const host = prefix + "/" + [...done, part].join("/");
    if (isLast && !opts.followLast) {
      done.push(part);
      break;
    }
    let target2;
    if (opts.symlinkTarget) target2 = opts.symlinkTarget([...done, part].join("/"));
    else {
      try {
        if (lstatSync3(host, { throwIfNoEntry: false })?.isSymbolicLink()) target2 = readlinkSync2(host);
      } catch (e) {
        if (e.code !== "ENOENT" && e.code !== "ENOTDIR") throw e;
      }
    }
    if (target2 === void 0) {
      done.push(part);
      continue;
    }
    if (++links > MAX_LINKS) {
      throw new UnsafeArchiveError(`too many levels of symbolic links resolving ${JSON.stringify(unsafeParts.join("/"))}`, { entry: unsafeParts.join("/") });
    }
    if (target2.startsWith("/")) done.length = 0;
    const parts = target2.split("/");
    for (let i = parts.length - 1; i >= 0; i--) todo.push(parts[i]);
  }
  return done.length === 0 ? absRoot : prefix + "/" + done.join("/");
}

// packages/layer/src/decompress.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { Duplex as Duplex2, PassThrough, Readable, Transform as Transform2 } from "node:stream";
import { pipeline } from "node:stream/promises";

// packages/layer/src/zstd.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createRequire as createRequire2 } from "node:module";
import { Transform } from "node:stream";
var zlib = () => process.getBuiltinModule("node:zlib");
var nodeZstd = () => zlib();
var zc = () => zlib().constants;
var NODE_CHUNK = 1 << 20;
var ENGINE_ORDER = {
  compress: ["zstd-napi", "node"],
  decompress: ["zstd-napi", "node"]
};
var addon;
function loadAddon() {
  if (addon) return addon;
  try {
    addon = { mod: createRequire2(import.meta.url)("zstd-napi") };
  } catch (e) {
    const err = e;
    addon = {
      why: err.code === "MODULE_NOT_FOUND" && /'zstd-napi'/.test(err.message) ? "zstd-napi is not installed" : `zstd-napi does not load: ${err.message.split("\n")[0]}`
    };
  }
  return addon;
}
function available(engine) {
  return engine === "node" ? typeof nodeZstd().createZstdCompress === "function" : loadAddon().mod !== void 0;
}
function zstdEngine(direction) {
  return ENGINE_ORDER[direction].find(available);
}
function unavailable() {
  return new TsbuildError(
    "ZSTD_UNAVAILABLE",
    `zstd is not available: Node ${process.version} has no zstd of its own (it came in Node 22.15) and ${loadAddon().why ?? "zstd-napi is missing"}`,
    {
      hint: "run tsbuild on Node 22.15 or newer (24 recommended), or install zstd-napi, which builds with node-gyp: apt-get install g++ make python3, then pnpm install (or npm install zstd-napi); gzip works without either"
    }
  );
}
function pick(direction, engine) {
  if (engine !== void 0) {
    if (!available(engine)) {
      throw engine === "node" ? new TsbuildError("ZSTD_UNAVAILABLE", `Node ${process.version} has no zstd of its own`) : new TsbuildError("ZSTD_UNAVAILABLE", loadAddon().why ?? "zstd-napi is missing");
    }
    return engine;
  }
  const e = zstdEngine(direction);
  if (e === void 0) throw unavailable();
  return e;
}
function createZstdCompressor(p, engine) {
  if (pick("compress", engine) === "node") {
    const level = zc().ZSTD_c_compressionLevel;
    const checksum = zc().ZSTD_c_checksumFlag;
    if (level === void 0 || checksum === void 0) throw new TsbuildError("ZSTD_UNAVAILABLE", `Node ${process.version}'s zlib lacks zstd's parameters`);
    return new OneWriteAtATime(nodeZstd().createZstdCompress({ params: { [level]: p.level, [checksum]: 1 }, chunkSize: NODE_CHUNK }));
  }
  const { CompressStream } = loadAddon().mod;
  return new CompressStream({ compressionLevel: p.level, nbWorkers: p.workers, jobSize: p.jobSize, checksumFlag: true });
}
var OneWriteAtATime = class extends Transform {
  #inner;
  constructor(inner) {
    super();
    this.#inner = inner;
    inner.on("data", (chunk) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.on("error", (err) => this.destroy(err));
  }
  _read(size) {
    this.#inner.resume();
    super._read(size);
  }
  _transform(chunk, _enc, done) {
    this.#inner.write(chunk, (err) => done(err));
  }
  _flush(done) {
    this.#inner.once("end", () => done());
    this.#inner.end();
  }
  _destroy(err, done) {
    this.#inner.destroy();
    done(err);
  }
};
function createZstdDecompressor(engine) {
  if (pick("decompress", engine) === "node") return nodeZstd().createZstdDecompress({ chunkSize: NODE_CHUNK });
  const { DecompressStream } = loadAddon().mod;
  return new DecompressStream();
}

// packages/layer/src/decompress.ts
var zlib2 = () => process.getBuiltinModule("node:zlib");
var childProcess = () => process.getBuiltinModule("node:child_process");
function sniffArchiveCompression(head) {
  const at = (i) => head[i];
  if (at(0) === 31 && at(1) === 139) return "gzip";
  if (at(0) === 66 && at(1) === 90 && at(2) === 104) return "bzip2";
  if (at(0) === 253 && at(1) === 55 && at(2) === 122 && at(3) === 88 && at(4) === 90 && at(5) === 0) return "xz";
  if (at(0) === 40 && at(1) === 181 && at(2) === 47 && at(3) === 253) return "zstd";
  return "none";
}
function decompress(src, opts = {}) {
  return run(src, opts, async () => {
    const { head, stream } = await peek(src, 6);
    const kind2 = sniffArchiveCompression(head);
    const layerKind = kind2 === "gzip" || kind2 === "zstd" ? kind2 : "none";
    return { stream, kind: opts.archives ? kind2 : layerKind };
  });
}
function decompressAs(src, kind2, opts = {}) {
  return run(src, opts, async () => ({ stream: src, kind: kind2 }));
}
var TOOLS = { xz: { cmd: "xz", pkg: "xz-utils" }, bzip2: { cmd: "bzip2", pkg: "bzip2" } };
function run(src, opts, open6) {
  const message = opts.errorMessage ?? ((reason) => `cannot decompress layer: ${reason}`);
  let cause;
  const toError = (err) => {
    const e = cause ?? err;
    return e instanceof TsbuildError ? new TsbuildError(e.code, message(e.message), { ...e.hint === void 0 ? {} : { hint: e.hint }, cause: e }) : new TsbuildError("DECOMPRESS", message(e.message), { cause: e });
  };
  let stopTool;
  const out = new PassThrough({
    destroy(err, callback) {
      stopTool?.();
      if (!src.destroyed) src.destroy();
      callback(err === null ? null : toError(err));
    }
  });
  void (async () => {
    const { stream, kind: kind2 } = await open6();
    const stages = [];
    if (kind2 === "gzip") stages.push(zlib2().createGunzip());
    else if (kind2 === "zstd") stages.push(createZstdDecompressor());
    else if (kind2 === "xz" || kind2 === "bzip2") {
      const tool = toolDecoder(TOOLS[kind2], (e) => cause ??= e);
      stopTool = tool.stop;
      stages.push(tool.stage);
    }
    await pipeline([stream, ...stages, out], { signal: opts.signal });
  })().catch((err) => {
    out.destroy(err instanceof Error ? err : new Error(String(err)));
  });
  return out;
}
function toolDecoder(tool, failed) {
  const child = childProcess().spawn(tool.cmd, ["-dcq"], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise((resolve3, reject) => {
    child.on("error", (e) => {
      const err = e.code === "ENOENT" ? new TsbuildError("MISSING_TOOL", `the ${tool.cmd} command is not installed (Node has no ${tool.cmd} decoder)`, {
        hint: `install the "${tool.pkg}" package (apt-get install ${tool.pkg})`,
        cause: e
      }) : e;
      failed(err);
      reject(err);
    });
    child.on("close", (code) => resolve3(code));
  });
  exited.catch(() => {
  });
  const gate = new Transform2({
    transform(chunk, _enc, cb) {
      cb(null, chunk);
    },
    flush(cb) {
      exited.then(
        (code) => cb(code === 0 ? null : new Error(`${tool.cmd} exited with ${code}: ${stderr.trim()}`)),
        (e) => cb(e)
      );
    }
  });
  child.stdout.pipe(gate);
  child.stdout.on("error", (e) => gate.destroy(e));
  child.stdin.on("error", () => {
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  };
  return { stage: Duplex2.from({ writable: child.stdin, readable: gate }), stop };
}
async function peek(src, n) {
  const parts = [];
  let have = 0;
  while (have < n && !src.readableEnded) {
    const chunk = src.read();
    if (chunk === null) {
      if (src.errored) throw src.errored;
      await nextReadable(src);
      continue;
    }
    const buf = typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk);
    parts.push(buf);
    have += buf.length;
  }
  const head = Buffer.concat(parts);
  if (src.readableEnded) return { head, stream: Readable.from(head.length > 0 ? [head] : []) };
  if (head.length > 0) src.unshift(head);
  return { head, stream: src };
}
function nextReadable(src) {
  return new Promise((resolve3, reject) => {
    const done = (err) => {
      src.off("readable", onReady);
      src.off("end", onReady);
      src.off("error", done);
      if (err) reject(err);
      else resolve3();
    };
    const onReady = () => done();
    src.on("readable", onReady);
    src.on("end", onReady);
    src.on("error", done);
  });
}

// packages/layer/src/userns.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFileSync as readFileSync3 } from "node:fs";
var userns;
function inUserNamespace() {
  if (userns === void 0) {
    let text = "";
    try {
      text = readFileSync3("/proc/self/uid_map", "utf8");
    } catch {
    }
    const lines = text.trim().split("\n").map((l) => l.trim().split(/\s+/).join(" "));
    userns = text !== "" && !(lines.length === 1 && lines[0] === "0 0 4294967295");
  }
  return userns;
}

// packages/layer/src/apply.ts
var childProcess2 = () => process.getBuiltinModule("node:child_process");
function lstatOrUndefined(p) {
  try {
    return lstatSync4(p);
  } catch (e) {
    const code = e.code;
    if (code === "ENOENT" || code === "ENOTDIR") return void 0;
    throw e;
  }
}
function mappedIds(file) {
  try {
    let top = -1;
    for (const line of readFileSync4(file, "utf8").trim().split("\n")) {
      const [inside, , count] = line.trim().split(/\s+/).map(Number);
      if (inside !== void 0 && count !== void 0) top = Math.max(top, inside + count - 1);
    }
    return top >= 0 ? top : void 0;
  } catch {
    return void 0;
  }
}
function isOverlayXattr2(name) {
  return name.startsWith("trusted.overlay.") || name.startsWith("user.overlay.");
}
async function apply(tar, dir, opts = {}) {
  const root = resolvePath3(dir);
  const signal = opts.signal;
  mkdirSync2(root, { recursive: true });
  const hash = createHash4("sha256");
  let size = 0;
  let entries = 0;
  let whiteouts = 0;
  const skipped = { devices: 0 };
  const dirs = /* @__PURE__ */ new Map();
  const created = /* @__PURE__ */ new Map();
  const dirTimes = [];
  const xattrs = [];
  try {
    const source = decompress(tar instanceof Readable2 ? tar : Readable2.from(tar));
    const reader = readTar(source, {
      signal,
      onBytes: (c) => {
        hash.update(c);
        size += c.length;
      }
    });
    for await (const { header, body } of reader) {
      signal?.throwIfAborted();
      entries++;
      const parts = cleanArchivePath(header.path);
      try {
        const r = await applyEntry(root, parts, header, body, created, entries, opts.whiteouts ?? true, opts.overlay, skipped, dirs);
        if (r === "whiteout") whiteouts++;
        else if (r) {
          if (header.type === "dir") dirTimes.push({ parts, host: r, index: entries, mtime: header.mtime });
          if (header.xattrs && header.type !== "hardlink") {
            const attrs = /* @__PURE__ */ new Map();
            for (const [k, v] of header.xattrs) {
              if (isOverlayXattr2(k)) continue;
              if (!/^[a-z]+\.[^\0\n]+$/.test(k)) {
                throw new UnsafeArchiveError(`entry ${JSON.stringify(header.path)} has an invalid xattr name ${JSON.stringify(k)}`, { entry: header.path });
              }
              attrs.set(k, v);
            }
            if (attrs.size > 0) xattrs.push({ parts, host: r, index: entries, attrs });
          }
        }
      } catch (e) {
        if (e instanceof TsbuildError) throw e;
        const err = e;
        const top = err.code === "EINVAL" && inUserNamespace() ? mappedIds("/proc/self/uid_map") : void 0;
        if (top !== void 0 && (header.uid > top || header.gid > (mappedIds("/proc/self/gid_map") ?? top))) {
          throw new TsbuildError("APPLY", `cannot apply layer entry ${JSON.stringify(header.path)}: its owner ${header.uid}:${header.gid} is beyond the ids this user namespace maps (0-${top})`, {
            hint: "give the user more subordinate ids (usermod --add-subuids/--add-subgids), or build as root",
            cause: e
          });
        }
        throw new TsbuildError("APPLY", `cannot apply layer entry ${JSON.stringify(header.path)}: ${err.message}`, { cause: e });
      }
    }
    const stillThere = (d) => created.get(d.host) === d.index && secureJoin(root, d.parts) === d.host && lstatOrUndefined(d.host) !== void 0;
    await writeXattrs(
      xattrs.filter(stillThere).map((x) => [x.host, x.attrs]),
      { signal }
    );
    for (const d of dirTimes) if (stillThere(d)) lutimesSync(d.host, d.mtime, d.mtime);
  } catch (e) {
    if (signal?.aborted && !(e instanceof CancelledError)) throw new CancelledError(`applying a layer to ${dir} was cancelled`, { cause: e });
    throw e;
  }
  return { diffId: `sha256:${hash.digest("hex")}`, size, entries, whiteouts, skippedDevices: skipped.devices };
}
function overlayWhiteout(parent, base, h, created, format2) {
  mkdirSync2(parent, { recursive: true, mode: 493 });
  if (!lstatSync4(parent).isDirectory()) {
    throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} is in a directory that is not one`, { entry: h.path });
  }
  if (base === OPAQUE_MARKER) {
    setAttributeSync(parent, format2.opaqueXattr, Buffer.from("y"));
    return "whiteout";
  }
  const victim = base.slice(WHITEOUT_PREFIX.length);
  if (victim === "" || victim === "." || victim === "..") {
    throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} does not name a file in its directory`, { entry: h.path });
  }
  const target2 = `${parent}/${victim}`;
  if (created.has(target2) || lstatOrUndefined(target2) !== void 0) return "whiteout";
  const made = childProcess2().spawnSync("mknod", ["-m", "000", target2, "c", "0", "0"], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
  if (made.status === 0) return "whiteout";
  if (format2.whiteoutFiles && /not permitted/i.test(made.stderr ?? "")) {
    writeFileSync(`${parent}/${base}`, "", { mode: 0 });
    return "whiteout";
  }
  throw new TsbuildError("APPLY", `cannot make the whiteout ${JSON.stringify(h.path)}: ${(made.stderr || made.error?.message || `mknod exited with ${made.status}`).trim()}`, {
    hint: "the tsbuild root must be on a filesystem that takes overlayfs whiteouts (ext4, xfs, btrfs, tmpfs; not overlayfs unless fuse-overlayfs mounts it)"
  });
}
async function drain(body) {
  for await (const _ of body) ;
}
function removeAll(host) {
  rmSync(host, { recursive: true, force: true });
}
async function applyEntry(root, parts, h, body, created, index, whiteouts, overlay, skipped, dirs) {
  if (parts.length === 0) {
    if (h.type !== "dir") throw new UnsafeArchiveError(`entry ${JSON.stringify(h.path)} would replace the root directory`, { entry: h.path });
    lchownSync(root, h.uid, h.gid);
    chmodSync(root, h.mode);
    created.set(root, index);
    return root;
  }
  const base = parts[parts.length - 1];
  const parentParts = parts.slice(0, -1);
  const parentKey = parentParts.join("/");
  const known2 = dirs.get(parentKey);
  const parent = known2 ?? secureJoin(root, parentParts, { followLast: true });
  if (whiteouts && base.startsWith(WHITEOUT_PREFIX)) {
    await drain(body);
    dirs.clear();
    if (overlay) return overlayWhiteout(parent, base, h, created, overlay);
    const parentSt = lstatOrUndefined(parent);
    if (base === OPAQUE_MARKER) {
      if (parentSt?.isDirectory()) {
        for (const name of readdirSync3(parent)) {
          const child = `${parent}/${name}`;
          if (!created.has(child)) removeAll(child);
        }
      }
      return "whiteout";
    }
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === "" || victim === "." || victim === "..") {
      throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} does not name a file in its directory`, { entry: h.path });
    }
    const target2 = `${parent}/${victim}`;
    if (parentSt?.isDirectory() && !created.has(target2)) removeAll(target2);
    return "whiteout";
  }
  if (known2 === void 0) {
    mkdirSync2(parent, { recursive: true, mode: 493 });
    dirs.set(parentKey, parent);
  }
  const host = `${parent}/${base}`;
  const existing = lstatOrUndefined(host);
  if (existing && !(h.type === "dir" && existing.isDirectory())) {
    dirs.clear();
    if (existing.isDirectory()) removeAll(host);
    else unlinkSync(host);
  }
  created.set(host, index);
  switch (h.type) {
    case "dir": {
      if (!existing?.isDirectory()) mkdirSync2(host, { mode: 448 });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      dirs.set(parts.join("/"), host);
      break;
    }
    case "file": {
      const fd = openSync3(host, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 384);
      try {
        let written = 0;
        for await (const chunk of body) {
          let off = 0;
          while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off, written + off);
          written += chunk.length;
        }
        fchownSync(fd, h.uid, h.gid);
        fchmodSync(fd, h.mode);
        futimesSync(fd, h.mtime, h.mtime);
      } finally {
        closeSync3(fd);
      }
      return host;
    }
    case "hardlink": {
      const targetParts = cleanArchivePath(h.linkpath ?? "");
      const target2 = secureJoin(root, targetParts);
      const st = lstatOrUndefined(target2);
      if (targetParts.length === 0 || !st || st.isDirectory()) {
        throw new UnsafeArchiveError(`hardlink ${JSON.stringify(h.path)} points to ${JSON.stringify(h.linkpath)}, which is not a file in the layer's root`, {
          entry: h.path
        });
      }
      linkSync(target2, host);
      return void 0;
    }
    case "symlink": {
      dirs.clear();
      symlinkSync(h.linkpath ?? "", host);
      lchownSync(host, h.uid, h.gid);
      break;
    }
    case "char":
    case "block": {
      if (inUserNamespace() && !(h.type === "char" && (h.devmajor ?? 0) === 0 && (h.devminor ?? 0) === 0)) {
        skipped.devices++;
        created.delete(host);
        return void 0;
      }
      childProcess2().execFileSync("mknod", ["-m", (h.mode & 4095).toString(8), host, h.type === "char" ? "c" : "b", String(h.devmajor ?? 0), String(h.devminor ?? 0)], {
        stdio: ["ignore", "ignore", "pipe"]
      });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      break;
    }
    case "fifo": {
      childProcess2().execFileSync("mkfifo", ["-m", (h.mode & 4095).toString(8), host], { stdio: ["ignore", "ignore", "pipe"] });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      break;
    }
  }
  if (h.type !== "dir") lutimesSync(host, h.mtime, h.mtime);
  return host;
}

// packages/layer/src/compress.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash5 } from "node:crypto";
import { availableParallelism } from "node:os";
import { Transform as Transform3 } from "node:stream";
import { finished as finished4, pipeline as pipeline2 } from "node:stream/promises";
var zlib3 = () => process.getBuiltinModule("node:zlib");
var workerThreads = () => process.getBuiltinModule("node:worker_threads");
var DEFAULT_GZIP_LEVEL = 6;
var DEFAULT_ZSTD_LEVEL = 3;
var ZSTD_JOB_SIZE = 2 << 20;
var BLOCK_SIZE = 1 << 20;
async function compress(src, out, opts) {
  const { algorithm, signal } = opts;
  if (algorithm !== "gzip" && algorithm !== "zstd") {
    throw new UsageError(`unknown compression ${JSON.stringify(algorithm)}`, { hint: "use gzip or zstd" });
  }
  const threads = opts.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw new UsageError(`compression threads must be an integer from 1 to 256, got ${threads}`);
  }
  const [minLevel, maxLevel] = algorithm === "gzip" ? [1, 9] : [1, 19];
  const level = opts.level ?? (algorithm === "gzip" ? DEFAULT_GZIP_LEVEL : DEFAULT_ZSTD_LEVEL);
  if (!Number.isInteger(level) || level < minLevel || level > maxLevel) {
    throw new UsageError(`${algorithm} level must be an integer from ${minLevel} to ${maxLevel}, got ${level}`);
  }
  if (signal?.aborted) throw cancelled(signal);
  try {
    const hash = opts.hash === false ? void 0 : createHash5("sha256");
    const size = algorithm === "gzip" ? await gzipParallel(src, out, level, threads, hash, signal) : await zstdStream(src, out, level, threads, hash, signal);
    return hash === void 0 ? { size } : { digest: `sha256:${hash.digest("hex")}`, size };
  } catch (err) {
    if (!out.destroyed) out.destroy();
    if (!src.destroyed) src.destroy();
    if (signal?.aborted) throw cancelled(signal);
    if (err instanceof TsbuildError) throw err;
    throw new TsbuildError("COMPRESS", `${algorithm} compression failed: ${errorMessage(err)}`, { cause: err });
  }
}
async function zstdStream(src, out, level, threads, hash, signal) {
  let size = 0;
  const encoder = createZstdCompressor({ level, workers: threads, jobSize: ZSTD_JOB_SIZE });
  const tap = new Transform3({
    transform(chunk, _enc, done) {
      hash?.update(chunk);
      size += chunk.length;
      done(null, chunk);
    }
  });
  await pipeline2(src, encoder, tap, out, { signal });
  return size;
}
var PROBE_SIZE = 32 << 10;
var STORE_RATIO = 0.97;
function storeLevel(data, level) {
  if (level === 0 || data.length < PROBE_SIZE * 4) return level;
  const incompressible = (at) => zlib3().deflateRawSync(data.subarray(at, at + PROBE_SIZE), { level: 1 }).length >= PROBE_SIZE * STORE_RATIO;
  return [0, (data.length >> 1) - PROBE_SIZE / 2, data.length - PROBE_SIZE].every(incompressible) ? 0 : level;
}
var WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
const probeLengthSlow = (b) => zlib.deflateRawSync(b, { level: 1 }).length;
let probeLength = probeLengthSlow;
try {
  const engine = zlib.createDeflateRaw({ level: 1 });
  const handle = engine._handle;
  const state = engine._writeState;
  const room = Buffer.allocUnsafe(${PROBE_SIZE} + 4096);
  const fast = (b) => {
    handle.reset();
    handle.writeSync(zlib.constants.Z_FINISH, b, 0, b.length, room, 0, room.length);
    // Input left over or no room left: the buffer was too small to finish, so ask zlib the usual way.
    return state[1] !== 0 || state[0] === 0 ? probeLengthSlow(b) : room.length - state[0];
  };
  const random = require('node:crypto').randomBytes(${PROBE_SIZE});
  const text = Buffer.from('usr/share/doc/tsbuild/copyright 0644 root root\\n'.repeat(${Math.ceil(PROBE_SIZE / 40)})).subarray(0, ${PROBE_SIZE});
  const mixed = Buffer.concat([random.subarray(0, ${PROBE_SIZE / 2}), text.subarray(0, ${PROBE_SIZE / 2})]);
  if ([random, text, mixed, random].every((b) => fast(b) === probeLengthSlow(b))) probeLength = fast;
} catch {
  // No usable handle: deflateRawSync it is.
}
parentPort.on('message', (m) => {
  try {
    const data = Buffer.from(m.input, 0, m.length);
    const incompressible = (at) => probeLength(data.subarray(at, at + ${PROBE_SIZE})) >= ${PROBE_SIZE} * ${STORE_RATIO};
    const probes = [0, (data.length >> 1) - ${PROBE_SIZE / 2}, data.length - ${PROBE_SIZE}];
    const level = m.level > 0 && data.length >= ${PROBE_SIZE * 4} && probes.every(incompressible) ? 0 : m.level;
    const options = { level, chunkSize: m.chunkSize, finishFlush: m.last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH };
    const out = zlib.deflateRawSync(data, options);
    const crc = zlib.crc32(data);
    // Small outputs may share a pooled buffer, which cannot move: those are copied.
    const movable = out.buffer.byteLength >= m.chunkSize;
    const deflated = movable ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
    const offset = movable ? out.byteOffset : 0;
    parentPort.postMessage({ id: m.id, deflated, offset, length: out.byteLength, crc, input: m.input }, [deflated, m.input]);
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.stack) || err) });
  }
});
`;
var OUT_CHUNK = BLOCK_SIZE + (64 << 10);
function deflateBlock(data, last, level) {
  return zlib3().deflateRawSync(data, {
    level: storeLevel(data, level),
    chunkSize: OUT_CHUNK,
    finishFlush: last ? zlib3().constants.Z_FINISH : zlib3().constants.Z_SYNC_FLUSH
  });
}
var JOBS_PER_WORKER = 2;
var DeflatePool = class {
  #level;
  /** Jobs each worker has been sent, in the order it answers them. */
  #assigned = /* @__PURE__ */ new Map();
  #queue = [];
  #failure;
  #nextId = 0;
  constructor(threads, level) {
    this.#level = level;
    for (let i = 0; i < threads; i++) {
      const worker = new (workerThreads()).Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
      worker.unref();
      worker.on("message", (reply) => this.#onReply(worker, reply));
      worker.on("error", (err) => this.#fail(err));
      worker.on("exit", (code) => {
        if ((this.#assigned.get(worker)?.length ?? 0) > 0) this.#fail(new InternalError(`deflate worker exited with code ${code}`));
      });
      this.#assigned.set(worker, []);
    }
  }
  run(input, length, last) {
    return new Promise((resolve3, reject) => {
      if (this.#failure) return reject(this.#failure);
      this.#queue.push({ id: this.#nextId++, input, length, last, resolve: resolve3, reject });
      this.#dispatch();
    });
  }
  fail(err) {
    this.#fail(err);
  }
  async close() {
    await Promise.all([...this.#assigned.keys()].map((w) => w.terminate()));
  }
  #dispatch() {
    while (this.#queue.length > 0) {
      let target2;
      let least = JOBS_PER_WORKER;
      for (const [worker, jobs] of this.#assigned) {
        if (jobs.length < least) {
          target2 = worker;
          least = jobs.length;
        }
      }
      if (!target2) return;
      const job = this.#queue.shift();
      this.#assigned.get(target2).push(job);
      target2.postMessage(
        { id: job.id, input: job.input, length: job.length, last: job.last, level: this.#level, chunkSize: OUT_CHUNK },
        [job.input]
      );
    }
  }
  #onReply(worker, reply) {
    const job = this.#assigned.get(worker)?.shift();
    if (!job || job.id !== reply.id) return this.#fail(new InternalError("deflate worker answered out of turn"));
    if (reply.error !== void 0 || !reply.deflated || reply.crc === void 0 || !reply.input) {
      const err = new InternalError(`deflate worker failed: ${reply.error ?? "incomplete reply"}`);
      job.reject(err);
      return this.#fail(err);
    }
    job.resolve({ deflated: Buffer.from(reply.deflated, reply.offset ?? 0, reply.length), crc: reply.crc, length: job.length, input: reply.input });
    this.#dispatch();
  }
  #fail(err) {
    if (this.#failure) return;
    this.#failure = err;
    for (const jobs of this.#assigned.values()) for (const job of jobs.splice(0)) job.reject(err);
    for (const job of this.#queue.splice(0)) job.reject(err);
  }
};
function gzipHeader(level) {
  const xfl = level === 9 ? 2 : level === 1 ? 4 : 0;
  return Buffer.from([31, 139, 8, 0, 0, 0, 0, 0, xfl, 3]);
}
async function gzipParallel(src, out, level, threads, hash, signal) {
  let size = 0;
  let crc = 0;
  let total = 0;
  let pool;
  let outError;
  const onOutError = (err) => {
    outError ??= err;
    pool?.fail(err);
  };
  out.on("error", onOutError);
  const emit = async (buf) => {
    if (outError) throw outError;
    hash?.update(buf);
    size += buf.length;
    if (!out.write(buf)) await drained(out);
  };
  const maxInFlight = threads * (JOBS_PER_WORKER + 1);
  const pending = [];
  const spare = [];
  const onAbort = () => {
    const err = cancelled(signal);
    pool?.fail(err);
    src.destroy(err);
    out.destroy();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const settle = async () => {
    const r = await pending.shift();
    crc = crc32Combine(crc, r.crc, r.length);
    total += r.length;
    spare.push(r.input);
    await emit(r.deflated);
  };
  const submit = async (block, length, last) => {
    if (last && pending.length === 0 && pool === void 0) {
      const view = Buffer.from(block, 0, length);
      const deflated = deflateBlock(view, true, level);
      pending.push(Promise.resolve({ deflated, crc: zlib3().crc32(view), length, input: block }));
    } else {
      pool ??= new DeflatePool(threads, level);
      const job = pool.run(block, length, last);
      job.catch(() => {
      });
      pending.push(job);
    }
    while (pending.length >= maxInFlight || last && pending.length > 0) await settle();
  };
  try {
    await emit(gzipHeader(level));
    let block = new ArrayBuffer(BLOCK_SIZE);
    let fill = 0;
    for await (const chunk of src) {
      if (signal?.aborted) throw cancelled(signal);
      const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      let off = 0;
      while (off < buf.length) {
        if (fill === BLOCK_SIZE) {
          await submit(block, fill, false);
          block = spare.pop() ?? new ArrayBuffer(BLOCK_SIZE);
          fill = 0;
        }
        const n = buf.copy(new Uint8Array(block), fill, off, Math.min(buf.length, off + BLOCK_SIZE - fill));
        fill += n;
        off += n;
      }
    }
    await submit(block, fill, true);
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(crc >>> 0, 0);
    trailer.writeUInt32LE(total % 2 ** 32, 4);
    await emit(trailer);
    out.end();
    await finished4(out);
    return size;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    out.off("error", onOutError);
    await pool?.close();
  }
}
var CRC_POLY = 3988292384;
function multModP(a, b) {
  let m = 2147483648;
  let p = 0;
  for (; ; ) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & m - 1) === 0) break;
    }
    m >>>= 1;
    b = (b & 1) !== 0 ? b >>> 1 ^ CRC_POLY : b >>> 1;
  }
  return p >>> 0;
}
var X2N = (() => {
  const t = [1073741824];
  for (let k = 1; k < 32; k++) t.push(multModP(t[k - 1], t[k - 1]));
  return t;
})();
function x2nModP(n, k) {
  let p = 2147483648;
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31], p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}
function crc32Combine(crcA, crcB, lengthB) {
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ crcB >>> 0) >>> 0;
}
function cancelled(signal) {
  return new CancelledError("compression cancelled", { cause: signal.reason });
}
function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

// packages/store/src/image.ts
var StoreImage = class {
  constructor(src, desc) {
    this.src = src;
    this.desc = desc;
  }
  src;
  desc;
  rawM;
  m;
  rawC;
  c;
  async descriptor() {
    return this.desc;
  }
  async digest() {
    return this.desc.digest;
  }
  rawManifest() {
    return this.rawM ??= this.src.readBlob(this.desc.digest);
  }
  manifest() {
    return this.m ??= this.rawManifest().then((b) => parseManifest(b, { source: this.desc.digest }));
  }
  async configDescriptor() {
    return (await this.manifest()).config;
  }
  rawConfig() {
    return this.rawC ??= this.configDescriptor().then((d) => this.src.readBlob(d.digest));
  }
  config() {
    return this.c ??= Promise.all([this.rawConfig(), this.configDescriptor()]).then(([b, d]) => parseConfig(b, { source: d.digest }));
  }
  async layers() {
    const [m, c] = await Promise.all([this.manifest(), this.config()]);
    return m.layers.map((d, i) => new StoreLayer(this.src, d, c.rootfs.diff_ids[i]));
  }
};
var StoreLayer = class {
  constructor(src, desc, diff2) {
    this.src = src;
    this.desc = desc;
    this.diff = diff2;
  }
  src;
  desc;
  diff;
  async diffId() {
    if (this.diff === void 0) throw new TsbuildError("INVALID_IMAGE", `layer ${this.desc.digest} has no diff_id in the image config`);
    return this.diff;
  }
  async digest() {
    return this.desc.digest;
  }
  async size() {
    return this.desc.size;
  }
  async mediaType() {
    return this.desc.mediaType;
  }
  async compressed() {
    return this.src.openBlob(this.desc.digest);
  }
  async uncompressed() {
    const compression = layerCompression(this.desc.mediaType);
    if (compression === "none") return this.src.openBlob(this.desc.digest);
    if (this.diff !== void 0 && await this.src.hasBlob(this.diff)) return this.src.openBlob(this.diff);
    const blob = await this.src.openBlob(this.desc.digest);
    const digest = this.desc.digest;
    return decompressAs(blob, compression, { errorMessage: (reason) => `${compression} layer ${digest} failed to decompress: ${reason}` });
  }
};

// packages/store/src/gc.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readdir as readdir2, rm as rm5, stat as stat2 } from "node:fs/promises";
import { join as join4 } from "node:path";
async function collectGarbage(store, opts) {
  const reachable = /* @__PURE__ */ new Set();
  const queue = [];
  for (const m of (await store.readIndex()).manifests) queue.push({ digest: m.digest, mediaType: m.mediaType });
  for (const d of opts.keep ?? []) queue.push({ digest: d });
  for (const ns of await store.metaNamespaces()) {
    if (ns === "blobmap") continue;
    for (const d of await store.meta(ns).roots()) queue.push({ digest: d });
  }
  const visit = async (digest, mediaType) => {
    if (reachable.has(digest)) return;
    reachable.add(digest);
    if (!await store.hasBlob(digest)) return;
    let mt = mediaType;
    let bytes;
    if (!isManifestMediaType(mt) && !isIndexMediaType(mt)) {
      if (mt !== void 0) return;
      if ((await stat2(store.blobPath(digest))).size > MAX_MANIFEST_SIZE) return;
      bytes = await store.readBlob(digest);
      mt = sniffMediaType(bytes);
    }
    if (isIndexMediaType(mt)) {
      for (const m of parseIndex(bytes ?? await store.readBlob(digest), { source: digest }).manifests) queue.push({ digest: m.digest, mediaType: m.mediaType });
    } else if (isManifestMediaType(mt)) {
      const m = parseManifest(bytes ?? await store.readBlob(digest), { source: digest });
      queue.push({ digest: m.config.digest, mediaType: m.config.mediaType });
      for (const l of m.layers) queue.push({ digest: l.digest, mediaType: l.mediaType });
    }
  };
  for (let item = queue.shift(); item; item = queue.shift()) {
    opts.signal?.throwIfAborted();
    await visit(item.digest, item.mediaType);
  }
  const map = store.blobMap();
  const mapKeys = await map.keys();
  for (const key of mapKeys) {
    const [algo, ...rest] = key.split(":");
    const diffId = rest.join(":");
    if ((algo === "gzip" || algo === "zstd") && isDigest(diffId) && reachable.has(diffId)) {
      const desc = await map.get(key);
      if (isDigest(desc?.digest)) reachable.add(desc.digest);
    }
  }
  const result = { removedBlobs: 0, freedBytes: 0, removedTempFiles: 0 };
  const now = Date.now();
  const grace = opts.gracePeriodMs ?? 0;
  for (const name of await readdir2(store.blobsDir)) {
    const digest = `sha256:${name}`;
    if (isDigest(digest) && reachable.has(digest)) continue;
    const p = join4(store.blobsDir, name);
    try {
      const s = await stat2(p);
      if (grace > 0 && now - s.mtimeMs < grace) continue;
      await rm5(p, { recursive: true, force: true });
      result.removedBlobs++;
      result.freedBytes += s.size;
    } catch (e) {
      if (errnoCode(e) !== "ENOENT") throw e;
    }
  }
  if (result.removedBlobs > 0) await fsyncDir(store.blobsDir);
  for (const key of mapKeys) {
    const v = await map.get(key);
    const target2 = key.startsWith("diffid:") ? key.slice("diffid:".length) : v?.digest;
    if (!isDigest(target2) || !await store.available(target2)) await map.delete(key);
  }
  const maxAge = opts.tempMaxAgeMs ?? 36e5;
  for (const name of await readdir2(store.ingestDir)) {
    const p = join4(store.ingestDir, name);
    try {
      if (now - (await stat2(p)).mtimeMs > maxAge) {
        await rm5(p, { recursive: true, force: true });
        result.removedTempFiles++;
      }
    } catch (e) {
      if (errnoCode(e) !== "ENOENT") throw e;
    }
  }
  return result;
}

// packages/store/src/store.ts
function resolveRoot(opts = {}) {
  const env = opts.env ?? process.env;
  if (opts.root) return resolvePath4(opts.root);
  if (env.TSBUILD_ROOT) return resolvePath4(env.TSBUILD_ROOT);
  const uid = opts.uid ?? process.getuid?.() ?? -1;
  if (uid === 0) return "/var/lib/tsbuild";
  const data = env.XDG_DATA_HOME || join5(env.HOME || homedir(), ".local", "share");
  return resolvePath4(data, "tsbuild");
}
var LAYOUT_VERSION = "1.0.0";
var ID_PREFIX_RE = /^(?:sha256:)?([0-9a-f]{12,64})$/;
var BLOBMAP_NS = "blobmap";
var Store = class {
  root;
  layoutDir;
  blobsDir;
  ingestDir;
  locksDir;
  metaDir;
  indexFile;
  indexLock;
  lockOpts;
  fetcher;
  fetching = /* @__PURE__ */ new Map();
  constructor(root, opts = {}) {
    this.root = root;
    this.layoutDir = join5(root, "oci");
    this.blobsDir = join5(this.layoutDir, "blobs", "sha256");
    this.ingestDir = join5(root, "ingest");
    this.locksDir = join5(root, "locks");
    this.metaDir = join5(root, "meta");
    this.indexFile = join5(this.layoutDir, "index.json");
    this.indexLock = join5(this.locksDir, "index.lock");
    this.lockOpts = {};
    if (opts.lockTimeoutMs !== void 0) this.lockOpts.timeoutMs = opts.lockTimeoutMs;
    if (opts.signal !== void 0) this.lockOpts.signal = opts.signal;
  }
  /** @internal creates the layout if missing and checks it if present. */
  async init() {
    for (const d of [this.blobsDir, this.ingestDir, this.locksDir, this.metaDir]) await mkdir2(d, { recursive: true });
    const layoutFile = join5(this.layoutDir, "oci-layout");
    let text;
    try {
      text = await readFile2(layoutFile, "utf8");
    } catch (e) {
      if (errnoCode(e) !== "ENOENT") throw e;
    }
    if (text === void 0) {
      await writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }), this.ingestDir);
    } else {
      let version;
      try {
        version = JSON.parse(text).imageLayoutVersion;
      } catch {
        version = void 0;
      }
      if (version !== LAYOUT_VERSION) {
        throw new TsbuildError("BAD_STORE", `${layoutFile} is not an OCI image layout version ${LAYOUT_VERSION}`);
      }
    }
    if (!await exists(this.indexFile)) {
      await withLock(
        this.indexLock,
        async () => {
          if (!await exists(this.indexFile)) await this.writeIndex(buildIndex([]));
        },
        this.lockOpts
      );
    }
  }
  // ---- blobs ----
  blobPath(d) {
    return join5(this.blobsDir, digestHex(parseDigest(d)));
  }
  blobWriter() {
    return new FileBlobWriter(tempName(this.ingestDir, "blob"), (d) => this.blobPath(d));
  }
  /** Stores bytes or a stream; a blob already present is not written again. */
  async writeBlob(data, expected, opts = {}) {
    if (data instanceof Uint8Array) {
      const got = { digest: sha256(data), size: data.byteLength };
      checkExpected(got, expected);
      if (await this.hasBlob(got.digest)) {
        await touch(this.blobPath(got.digest));
        return got;
      }
    }
    const w = this.blobWriter();
    try {
      const src = data instanceof Uint8Array ? Readable4.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]) : data;
      await pipeline3(src, w.stream, { signal: opts.signal });
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w.commit(expected);
  }
  /** Serialises a manifest, index or config canonically and stores it. */
  async putJson(mediaType, value) {
    const bytes = canonicalJson(value);
    const { digest, size } = await this.writeBlob(bytes);
    return { mediaType, digest, size };
  }
  async hasBlob(d) {
    const st = statSync(this.blobPath(d), { throwIfNoEntry: false });
    return st?.isFile() === true;
  }
  /** Lets missing blobs be fetched from where they are known to be (lazy pulls, remote caches). */
  setFetcher(fetcher) {
    this.fetcher = fetcher;
  }
  /** Whether the blob is here or can be fetched on first read. */
  async available(d) {
    return await this.hasBlob(d) || (await this.fetcher?.knows(d) ?? false);
  }
  /** Makes a blob local if it is not (fetching it once, however many readers ask at the same time). */
  async ensureBlob(d, opts = {}) {
    if (await this.hasBlob(d)) return true;
    const fetcher = this.fetcher;
    if (!fetcher) return false;
    let p = this.fetching.get(d);
    if (!p) {
      p = fetcher.fetch(d, opts).finally(() => this.fetching.delete(d));
      this.fetching.set(d, p);
    }
    return p;
  }
  async openBlob(d, opts = {}) {
    await this.ensureBlob(d, opts);
    const p = this.blobPath(d);
    try {
      const fh = await open4(p, "r");
      return fh.createReadStream({ highWaterMark: 1 << 20 });
    } catch (e) {
      if (errnoCode(e) === "ENOENT") throw new TsbuildError("BLOB_NOT_FOUND", `blob ${d} is not in the store at ${this.layoutDir}`, { cause: e });
      throw e;
    }
  }
  /** Reads a small (JSON) blob whole and checks its content against its digest. */
  async readBlob(d, opts = {}) {
    const max = opts.maxSize ?? MAX_JSON_BLOB_SIZE;
    await this.ensureBlob(d);
    const p = this.blobPath(d);
    let buf;
    try {
      const s = await stat3(p);
      if (s.size > max) throw new TsbuildError("BLOB_TOO_LARGE", `blob ${d} is ${s.size} bytes, more than the ${max} allowed for a manifest or config`);
      buf = await readFile2(p);
    } catch (e) {
      if (errnoCode(e) === "ENOENT") throw new TsbuildError("BLOB_NOT_FOUND", `blob ${d} is not in the store at ${this.layoutDir}`, { cause: e });
      throw e;
    }
    const actual = sha256(buf);
    if (actual !== d) throw new TsbuildError("CORRUPT_BLOB", `blob ${d} in the store is corrupt: its content hashes to ${actual}`, { hint: `remove ${p}` });
    return buf;
  }
  // ---- index.json and tags ----
  async readIndex() {
    return parseIndex(await readFile2(this.indexFile), { source: this.indexFile });
  }
  async writeIndex(idx) {
    await writeFileAtomic(this.indexFile, canonicalJson(idx), this.ingestDir);
  }
  /** Read-modify-write of index.json under the store-wide lock. */
  async updateIndex(fn) {
    return withLock(
      this.indexLock,
      async () => {
        const idx = await this.readIndex();
        const { manifests, result } = fn(idx.manifests);
        if (manifests !== idx.manifests) await this.writeIndex({ ...idx, manifests });
        return result;
      },
      this.lockOpts
    );
  }
  /** Points `name` (`:latest` added when untagged) at a manifest or index already in the store. */
  async tag(name, desc) {
    const ref = normalizeName(name);
    if (!isManifestMediaType(desc.mediaType) && !isIndexMediaType(desc.mediaType)) {
      throw new TsbuildError("BAD_TAG", `cannot tag ${ref}: ${desc.digest} has media type ${desc.mediaType}, not a manifest or index`);
    }
    const entry = { ...desc, annotations: { ...desc.annotations, [ANNOTATION_REF_NAME]: ref } };
    const current = (await this.readIndex()).manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === ref);
    if (current && current.digest === desc.digest && current.mediaType === desc.mediaType) return ref;
    await withLock(
      this.indexLock,
      async () => {
        if (!await this.hasBlob(desc.digest)) {
          throw new TsbuildError("BLOB_NOT_FOUND", `cannot tag ${ref}: manifest ${desc.digest} is not in the store`);
        }
        const idx = await this.readIndex();
        await this.writeIndex({ ...idx, manifests: [...idx.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== ref), entry] });
      },
      this.lockOpts
    );
    return ref;
  }
  async untag(name) {
    const ref = normalizeName(name);
    return this.updateIndex((ms) => {
      const kept = ms.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== ref);
      return kept.length === ms.length ? { manifests: ms, result: false } : { manifests: kept, result: true };
    });
  }
  async listImages() {
    const out = [];
    for (const m of (await this.readIndex()).manifests) {
      const name = m.annotations?.[ANNOTATION_REF_NAME];
      if (name !== void 0) out.push({ name, descriptor: withoutRefName(m) });
    }
    return out.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }
  /**
   * Finds an image by tag, `name@sha256:…`, full manifest digest, or an unambiguous hex prefix
   * (12+ characters) of a manifest or config digest, like a docker image id.
   */
  async resolve(ref) {
    const idx = await this.readIndex();
    if (ref.includes("@")) return this.byDigest(idx, parseRef(ref).digest);
    if (ref.startsWith("sha256:") && ref.length === 71) return this.byDigest(idx, parseDigest(ref));
    const prefix = ID_PREFIX_RE.exec(ref)?.[1];
    if (prefix === void 0 || !ref.startsWith("sha256:")) {
      let name;
      try {
        name = normalizeName(ref);
      } catch (e) {
        if (prefix === void 0) throw e;
      }
      const hit = idx.manifests.find((m) => name !== void 0 && m.annotations?.[ANNOTATION_REF_NAME] === name);
      if (hit) return withoutRefName(hit);
    }
    if (prefix === void 0) return void 0;
    const found2 = /* @__PURE__ */ new Map();
    for (const m of idx.manifests) {
      if (digestHex(m.digest).startsWith(prefix)) found2.set(m.digest, withoutRefName(m));
      else if (isManifestMediaType(m.mediaType)) {
        const config = await this.configDigestOf(m.digest);
        if (config !== void 0 && digestHex(config).startsWith(prefix)) found2.set(m.digest, withoutRefName(m));
      }
    }
    if (found2.size > 1) {
      throw new UsageError(`image id prefix ${ref} is ambiguous: it matches ${[...found2.keys()].join(", ")}`, { hint: "give more characters" });
    }
    return found2.values().next().value;
  }
  async configDigestOf(manifest) {
    try {
      const m = JSON.parse((await this.readBlob(manifest)).toString("utf8"));
      const d = m.config?.digest;
      return typeof d === "string" && /^sha256:[0-9a-f]{64}$/.test(d) ? d : void 0;
    } catch (e) {
      if (e instanceof TsbuildError && e.code === "BLOB_NOT_FOUND") return void 0;
      throw e;
    }
  }
  async byDigest(idx, d) {
    const hit = idx.manifests.find((m) => m.digest === d);
    if (hit) return withoutRefName(hit);
    if (!await this.hasBlob(d)) return void 0;
    const bytes = await this.readBlob(d);
    const mediaType = sniffMediaType(bytes);
    if (!isManifestMediaType(mediaType) && !isIndexMediaType(mediaType)) return void 0;
    return { mediaType, digest: d, size: bytes.length };
  }
  /** The image a reference names; an index is narrowed to the platform (the host's by default). */
  async loadImage(ref, opts = {}) {
    const desc = await this.resolve(ref);
    if (!desc) throw new UsageError(`no image ${JSON.stringify(ref)} in the store at ${this.root}`, { hint: "see the images the store holds with `tsbuild images`" });
    return this.imageAt(desc, opts.platform ?? hostPlatform(), ref);
  }
  async imageAt(desc, platform, ref) {
    if (isIndexMediaType(desc.mediaType)) {
      const idx = parseIndex(await this.readBlob(desc.digest), { source: desc.digest });
      const match = idx.manifests.find(
        (m) => platformMatches(m.platform, platform)
      );
      if (!match) {
        const have = idx.manifests.map((m) => m.platform ? formatPlatform(m.platform) : "?").join(", ");
        throw new UsageError(`image ${ref} has no manifest for ${formatPlatform(platform)} (it has: ${have || "none"})`);
      }
      return this.imageAt(match, platform, ref);
    }
    if (!isManifestMediaType(desc.mediaType)) throw new TsbuildError("BAD_MANIFEST", `${ref} (${desc.digest}) has media type ${desc.mediaType}, not an image manifest`);
    return new StoreImage(this, desc);
  }
  /**
   * Removes a tag; given a digest or id prefix instead, removes every tag of that image. Blobs go
   * at the next gc. Returns the names removed.
   */
  async removeImage(ref) {
    let byName;
    try {
      if (!ref.includes("@")) byName = normalizeName(ref);
    } catch {
      byName = void 0;
    }
    const idx = await this.readIndex();
    let digest;
    if (byName === void 0 || !idx.manifests.some((m) => m.annotations?.[ANNOTATION_REF_NAME] === byName)) {
      digest = (await this.resolve(ref))?.digest;
      if (digest === void 0) throw new UsageError(`no image ${JSON.stringify(ref)} in the store at ${this.root}`);
    }
    return this.updateIndex((ms) => {
      const gone = ms.filter((m) => digest !== void 0 ? m.digest === digest : m.annotations?.[ANNOTATION_REF_NAME] === byName);
      const names2 = gone.map((m) => m.annotations?.[ANNOTATION_REF_NAME]).filter((n) => n !== void 0);
      return { manifests: gone.length === 0 ? ms : ms.filter((m) => !gone.includes(m)), result: names2 };
    });
  }
  // ---- metadata and compressed variants ----
  meta(namespace, opts = {}) {
    return new FileMetaStore(this.metaDir, namespace, this.ingestDir, this.locksDir, this.lockOpts, opts);
  }
  /** @internal */
  blobMap() {
    return new FileMetaStore(this.metaDir, BLOBMAP_NS, this.ingestDir, this.locksDir, this.lockOpts);
  }
  /**
   * The `algo`-compressed blob of the uncompressed layer `diffId`, made at most once: the first
   * call streams the stored tar through `make` into a new blob and records the mapping after the
   * blob is committed; later calls (in any process) return the recorded descriptor.
   */
  async compressedBlob(diffId, algo, make, opts = {}) {
    const map = this.blobMap();
    const key = `${algo}:${diffId}`;
    const cached = await this.cachedCompressed(key);
    if (cached) return cached;
    const lock = join5(this.locksDir, `compress-${algo}-${digestHex(diffId)}.lock`);
    return withLock(
      lock,
      async () => {
        const again = await this.cachedCompressed(key);
        if (again) return again;
        const src = await this.openBlob(diffId);
        const w = this.blobWriter();
        try {
          await make(src, w.stream);
        } catch (e) {
          src.destroy();
          await w.abort();
          throw e;
        }
        src.destroy();
        opts.signal?.throwIfAborted();
        const { digest, size } = await w.commit();
        const desc = { mediaType: layerMediaType(algo), digest, size };
        await map.set(key, desc);
        await map.set(`diffid:${digest}`, diffId);
        return desc;
      },
      { ...this.lockOpts, signal: opts.signal }
    );
  }
  async cachedCompressed(key) {
    const v = await this.blobMap().get(key);
    if (v && typeof v.digest === "string" && await this.available(v.digest)) return v;
    return void 0;
  }
  /** A recorded `algo`-compressed variant of `diffId`, here or fetchable, without making one. */
  async compressedVariant(diffId, algo) {
    return this.cachedCompressed(`${algo}:${diffId}`);
  }
  /** The diff_id of a compressed blob this store made, if it made it. */
  async uncompressedFor(digest) {
    const v = await this.blobMap().get(`diffid:${digest}`);
    return typeof v === "string" && /^sha256:[0-9a-f]{64}$/.test(v) ? v : void 0;
  }
  /** Records that `compressed` is `diffId` compressed with `algo` (e.g. a layer pulled from a registry). */
  async recordCompressed(diffId, algo, compressed) {
    const map = this.blobMap();
    await map.set(`${algo}:${diffId}`, { mediaType: compressed.mediaType, digest: compressed.digest, size: compressed.size });
    await map.set(`diffid:${compressed.digest}`, diffId);
  }
  // ---- garbage collection ----
  async gc(opts = {}) {
    return withLock(this.indexLock, () => collectGarbage(this, opts), this.lockOpts);
  }
  /** @internal names of every meta namespace. */
  async metaNamespaces() {
    try {
      return (await readdir3(this.metaDir)).filter((n) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(n));
    } catch (e) {
      if (errnoCode(e) === "ENOENT") return [];
      throw e;
    }
  }
};
function withoutRefName(d) {
  const out = { ...d };
  if (d.annotations) {
    const { [ANNOTATION_REF_NAME]: _ref, ...rest } = d.annotations;
    if (Object.keys(rest).length > 0) out.annotations = rest;
    else delete out.annotations;
  }
  return out;
}
async function openStore(opts = {}) {
  const store = new Store(resolveRoot(opts.root !== void 0 ? { root: opts.root } : {}), opts);
  await store.init();
  return store;
}

// packages/snapshot/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/snapshot/src/snapshotter.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { randomBytes as randomBytes3 } from "node:crypto";
import { access, mkdir as mkdir3, readdir as readdir4, readFile as readFile6, readlink, realpath, rename as rename4, rm as rm6, rmdir, symlink, writeFile as writeFile3 } from "node:fs/promises";
import { unlinkSync as unlinkSync2 } from "node:fs";
import { join as join8 } from "node:path";

// packages/snapshot/src/mountinfo.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile3 } from "node:fs/promises";
function unescape(s) {
  return s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}
function parseMountinfo(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const fields2 = line.split(" ");
    const sep = fields2.indexOf("-", 6);
    const mp = fields2[4];
    const fsType = sep >= 0 ? fields2[sep + 1] : void 0;
    if (mp === void 0 || fsType === void 0) continue;
    out.push({ mountPoint: unescape(mp), fsType });
  }
  return out;
}
async function readMounts() {
  return parseMountinfo(await readFile3("/proc/self/mountinfo", "utf8"));
}
async function mountsUnder(dir) {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return (await readMounts()).map((m) => m.mountPoint).filter((p) => p === dir || p.startsWith(prefix)).sort((a, b) => b.length - a.length);
}

// packages/snapshot/src/proc.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile4 } from "node:fs/promises";
var childProcess3 = () => process.getBuiltinModule("node:child_process");
function runCommand(cmd, args, opts = {}) {
  return new Promise((resolve3, reject) => {
    const child = childProcess3().spawn(cmd, args, { cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => stdout += d);
    child.stderr.setEncoding("utf8").on("data", (d) => stderr += d);
    child.once("error", reject);
    child.once("close", (code, signal) => resolve3({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
}
async function startTime2(pid) {
  let stat10;
  try {
    stat10 = await readFile4(`/proc/${pid}/stat`, "utf8");
  } catch {
    return void 0;
  }
  const rest = stat10.slice(stat10.lastIndexOf(")") + 2).split(" ");
  const v = Number(rest[19]);
  return Number.isFinite(v) ? v : void 0;
}
var self;
function selfOwner() {
  self ??= startTime2(process.pid).then((start) => ({ pid: process.pid, start: start ?? 0 }));
  return self;
}
async function ownerAlive(o) {
  const start = await startTime2(o.pid);
  return start !== void 0 && (o.start === 0 || start === o.start);
}
function ownerToken(o) {
  return `${o.pid}-${o.start}`;
}
function parseOwnerToken(name) {
  const m = /^(\d+)-(\d+)-/.exec(name);
  if (!m) return void 0;
  return { pid: Number(m[1]), start: Number(m[2]) };
}

// packages/snapshot/src/driver.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DRIVERS = ["overlay", "overlay-userxattr", "fuse-overlayfs"];
var ROOT_FLAGS = "redirect_dir=off,metacopy=off,index=off";
var USERXATTR_FLAGS = "userxattr,index=off";
function overlayOptions(driver, spec) {
  const parts = [`lowerdir=${spec.lowers.join(":")}`];
  if (spec.upper) parts.push(`upperdir=${spec.upper.upper}`, `workdir=${spec.upper.work}`);
  if (driver === "overlay") parts.push(ROOT_FLAGS);
  else if (driver === "overlay-userxattr") parts.push(USERXATTR_FLAGS);
  if (spec.upper) parts.push("volatile");
  return parts.join(",");
}
function flagBytes(driver) {
  return driver === "overlay" ? ROOT_FLAGS.length : USERXATTR_FLAGS.length;
}
function candidateDrivers() {
  return inUserNamespace() ? ["overlay-userxattr", "fuse-overlayfs"] : ["overlay"];
}

// packages/snapshot/src/merged.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { lstatSync as lstatSync5, readlinkSync as readlinkSync3 } from "node:fs";
var MergedLayers = class {
  /**
   * `layers`: absolute layer dirs, newest first (`Snapshotter.layerDirs`). `opaqueXattr`: the
   * xattr that marks an opaque directory in them.
   */
  constructor(layers, opaqueXattr) {
    this.layers = layers;
    this.opaqueXattr = opaqueXattr;
    this.dirs.set("", layers);
  }
  layers;
  opaqueXattr;
  /** For each directory resolved so far: the layer dirs that contribute to it, newest first. */
  dirs = /* @__PURE__ */ new Map();
  /** lstat of `rel` (components joined by `/`, '' for the root) as the merged tree shows it. */
  lstat(rel) {
    return this.find(rel)?.stat;
  }
  /** The host path of the entry the merged tree shows at `rel` (its xattrs, its contents). */
  host(rel) {
    return this.find(rel)?.host;
  }
  /** The target of `rel` when the merged tree has a symlink there. */
  symlinkTarget(rel) {
    const f = this.find(rel);
    return f?.stat.isSymbolicLink() ? readlinkSync3(f.host) : void 0;
  }
  /** What `find` answered so far: a plan asks lstat and then host of one path. */
  found = /* @__PURE__ */ new Map();
  find(rel) {
    let f = this.found.get(rel);
    if (f === void 0) {
      f = this.lookup(rel) ?? null;
      this.found.set(rel, f);
    }
    return f ?? void 0;
  }
  lookup(rel) {
    if (rel === "") {
      const top = this.layers[0];
      const stat10 = top === void 0 ? void 0 : lstat2(top);
      return top === void 0 || stat10 === void 0 ? void 0 : { host: top, stat: stat10 };
    }
    const slash = rel.lastIndexOf("/");
    const parent = this.dir(slash < 0 ? "" : rel.slice(0, slash));
    if (!parent) return void 0;
    for (const layer of parent) {
      const host = `${layer}/${rel}`;
      const stat10 = lstat2(host);
      if (stat10 === void 0) continue;
      return isWhiteout(stat10) ? void 0 : { host, stat: stat10 };
    }
    return void 0;
  }
  /** The layers contributing to directory `rel`, or null when the merged tree has no directory there. */
  dir(rel) {
    const known2 = this.dirs.get(rel);
    if (known2 !== void 0) return known2;
    const slash = rel.lastIndexOf("/");
    const parent = this.dir(slash < 0 ? "" : rel.slice(0, slash));
    let out = null;
    if (parent) {
      for (const layer of parent) {
        const host = `${layer}/${rel}`;
        const stat10 = lstat2(host);
        if (stat10 === void 0) continue;
        if (!stat10.isDirectory()) break;
        (out ??= []).push(layer);
        if (this.isOpaque(host)) break;
      }
    }
    this.dirs.set(rel, out);
    return out;
  }
  isOpaque(host) {
    return readXattrs(host, (_p, name) => name === this.opaqueXattr)?.get(this.opaqueXattr)?.toString() === "y";
  }
  /** Whether the merged tree can be read this way: no layer's root is marked opaque (overlayfs would not merge it). */
  usable() {
    return this.layers.every((l) => !this.isOpaque(l));
  }
};
function lstat2(p) {
  try {
    return lstatSync5(p, { throwIfNoEntry: false });
  } catch (e) {
    if (e.code === "ENOTDIR") return void 0;
    throw e;
  }
}
function isWhiteout(st) {
  return st.isCharacterDevice() && st.rdev === 0;
}

// packages/snapshot/src/mount.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { randomBytes as randomBytes2 } from "node:crypto";
import { readFile as readFile5, rename as rename3, writeFile as writeFile2 } from "node:fs/promises";
import { join as join6 } from "node:path";
var OverlayMounter = class _OverlayMounter {
  constructor(root, owner, maxOptionBytes, found2) {
    this.root = root;
    this.owner = owner;
    this.maxOptionBytes = maxOptionBytes;
    this.found = found2;
  }
  root;
  owner;
  maxOptionBytes;
  found;
  /** Found by the first mount (or read from `driver`), then used for every mount. */
  detecting;
  static async open(root, owner, maxOptionBytes) {
    return new _OverlayMounter(root, owner, maxOptionBytes, await savedDriver(root));
  }
  /** The driver in use, once known. */
  get driver() {
    return this.found;
  }
  async mount(spec, mountPoint) {
    if (this.found === void 0 && this.detecting) await this.detecting.catch(() => void 0);
    const driver = this.found;
    if (driver !== void 0) {
      const failure = await this.tryMount(driver, spec, mountPoint);
      if (failure !== void 0) throw mountError(mountPoint, [failure]);
      return;
    }
    const detect = (async () => {
      const failures = [];
      for (const d of candidateDrivers()) {
        const failure = await this.tryMount(d, spec, mountPoint);
        if (failure === void 0) {
          await this.save(d);
          return;
        }
        failures.push(failure);
      }
      throw mountError(mountPoint, failures);
    })();
    this.detecting = detect;
    try {
      await detect;
    } finally {
      if (this.found === void 0) this.detecting = void 0;
    }
  }
  async save(d) {
    this.found = d;
    const tmp = join6(this.root, "t", `${ownerToken(this.owner)}-${randomBytes2(4).toString("hex")}.driver`);
    await writeFile2(tmp, `${d}
`);
    await rename3(tmp, join6(this.root, "driver"));
  }
  /** Mounts with one driver; the failure's text, or undefined once mounted. */
  async tryMount(driver, spec, mountPoint) {
    const options = overlayOptions(driver, spec);
    if (driver !== "fuse-overlayfs" && options.length > this.maxOptionBytes) {
      throw new InternalError(`overlay options are ${options.length} bytes, over the ${this.maxOptionBytes} limit`);
    }
    const r = driver === "fuse-overlayfs" ? await runCommand("fuse-overlayfs", ["-o", options, mountPoint], { cwd: this.root }).catch((e) => ({
      code: 127,
      stdout: "",
      stderr: e.code === "ENOENT" ? "fuse-overlayfs is not installed" : e.message
    })) : await runCommand("mount", ["-n", "-t", "overlay", "overlay", "-o", options, mountPoint], { cwd: this.root });
    if (r.code === 0) return void 0;
    const text = r.stderr.trim().split("\n").filter((l) => !/^\s*dmesg\(1\)|unknown argument ignored/.test(l)).join(" ").trim();
    return `${driver}: ${text || `exit ${r.code}`}`;
  }
};
async function savedDriver(root) {
  let text;
  try {
    text = (await readFile5(join6(root, "driver"), "utf8")).trim();
  } catch (e) {
    if (e.code === "ENOENT") return void 0;
    throw e;
  }
  const driver = DRIVERS.find((d) => d === text);
  if (driver === void 0) {
    throw new TsbuildError("SNAPSHOT_CORRUPT", `${join6(root, "driver")} names an unknown overlay driver ${JSON.stringify(text)}`, {
      hint: `remove ${root} to reset the layer cache`
    });
  }
  if (!candidateDrivers().includes(driver)) {
    const made = driver === "overlay" ? "by root" : "in a user namespace (without root)";
    const now = inUserNamespace() ? "in a user namespace" : "as root";
    throw new TsbuildError("SNAPSHOT_DRIVER", `the snapshots in ${root} were made ${made} for ${driver}, and cannot be mounted ${now}`, {
      hint: "use another --root (or TSBUILD_ROOT) for each way of running tsbuild"
    });
  }
  return driver;
}
function mountError(mountPoint, failures) {
  const hint = inUserNamespace() ? "without root, overlayfs needs Linux 5.11 or later and a tsbuild root on a filesystem it accepts as upper dir (ext4, xfs, btrfs, tmpfs; not overlayfs, as a container's own root is: use a volume), or fuse-overlayfs with a usable /dev/fuse" : "tsbuild must run as root on a kernel with overlayfs, on a filesystem overlay accepts (not overlay or NFS)";
  return new TsbuildError("SNAPSHOT_MOUNT", `mounting overlay at ${mountPoint} failed: ${failures.join("; ")}`, { hint });
}
async function unmount(mountPoint) {
  for (let attempt = 0; attempt < 5; attempt++) {
    if ((await mountsUnder(mountPoint)).every((m) => m !== mountPoint)) return;
    const r2 = await runCommand("umount", ["-n", mountPoint]);
    if (r2.code === 0) return;
    if (!/busy/i.test(r2.stderr)) {
      throw new TsbuildError("SNAPSHOT_UNMOUNT", `unmounting ${mountPoint} failed: ${r2.stderr.trim()}`);
    }
    await new Promise((res) => setTimeout(res, 50 * (attempt + 1)));
  }
  const r = await runCommand("umount", ["-n", "-l", mountPoint]);
  if (r.code !== 0) throw new TsbuildError("SNAPSHOT_UNMOUNT", `unmounting ${mountPoint} failed: ${r.stderr.trim()}`);
}

// packages/snapshot/src/active.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { join as join7 } from "node:path";
var OverlayActive = class {
  constructor(s, dir, parent, used, lowerDirs) {
    this.s = s;
    this.dir = dir;
    this.parent = parent;
    this.used = used;
    this.lowerDirs = lowerDirs;
    this.rootfs = join7(dir, "r");
    this.upper = join7(dir, "u");
  }
  s;
  dir;
  parent;
  used;
  lowerDirs;
  rootfs;
  upper;
  done = false;
  unmounting;
  finish() {
    if (this.done) throw new InternalError("snapshot was already committed or released");
    this.done = true;
  }
  detach() {
    if (this.unmounting) return;
    this.unmounting = unmount(this.rootfs);
    this.unmounting.catch(() => {
    });
  }
  unmounted() {
    return this.unmounting ?? unmount(this.rootfs);
  }
  async commit(chainId, parent) {
    if (parent !== void 0 && parent !== this.parent) {
      throw new InternalError(`commit of ${chainId} names parent ${parent}, but the snapshot was prepared from ${this.parent ?? "scratch"}`);
    }
    this.finish();
    try {
      await this.unmounted();
      return await this.s.commitDir(this.dir, chainId, this.parent);
    } finally {
      this.s.unuse(this.used);
    }
  }
  async release() {
    this.finish();
    try {
      await this.unmounted().catch(() => {
      });
      await this.s.removeActive(this.dir);
    } finally {
      this.s.unuse(this.used);
    }
  }
};

// packages/snapshot/src/snapshotter.ts
var ID_RE = /^[0-9a-z]{1,12}$/;
function errCode(e) {
  return e?.code;
}
function notFound(chainId) {
  return new TsbuildError("SNAPSHOT_NOT_FOUND", `snapshot ${chainId} does not exist`, {
    hint: "the layer cache was pruned or is damaged; rebuild without the cache"
  });
}
async function openSnapshotter(opts) {
  await mkdir3(opts.root, { recursive: true });
  const root = await realpath(opts.root);
  const owner = await selfOwner();
  await Promise.all(["keys", "l", "f", "a", "t", "e", "o"].map((d) => mkdir3(join8(root, d), { recursive: true })));
  const s = new OverlaySnapshotter(root, owner, opts.maxLowerLayers ?? 500, opts.maxOptionBytes ?? 4095, await OverlayMounter.open(root, owner, opts.maxOptionBytes ?? 4095));
  await s.init();
  return s;
}
var openMarkers = /* @__PURE__ */ new Set();
function removeOpenMarkers() {
  for (const m of openMarkers) {
    try {
      unlinkSync2(m);
    } catch {
    }
  }
  openMarkers.clear();
}
var OverlaySnapshotter = class {
  constructor(root, owner, maxLayers, maxOptionBytes, mounter) {
    this.root = root;
    this.owner = owner;
    this.maxLayers = maxLayers;
    this.maxOptionBytes = maxOptionBytes;
    this.mounter = mounter;
  }
  root;
  owner;
  maxLayers;
  maxOptionBytes;
  mounter;
  next = 0;
  inflight = /* @__PURE__ */ new Map();
  /** Publishes in progress in this process: their layer dirs briefly have no key. */
  publishing = 0;
  flattening = /* @__PURE__ */ new Map();
  /** Layer ids mounted as lowers by this process's active snapshots, with use counts. */
  inUse = /* @__PURE__ */ new Map();
  opaqueXattr = inUserNamespace() ? "user.overlay.opaque" : "trusted.overlay.opaque";
  get lowerFormat() {
    return { opaqueXattr: this.opaqueXattr, whiteoutFiles: this.driver === "fuse-overlayfs" };
  }
  get driver() {
    return this.mounter.driver;
  }
  /** Option bytes beyond the lowerdir list, for whichever driver the mount will use. */
  get flagBytes() {
    return Math.max(...(this.driver ? [this.driver] : candidateDrivers()).map(flagBytes));
  }
  async init() {
    for (const name of await readdir4(join8(this.root, "l"))) {
      if (ID_RE.test(name)) this.next = Math.max(this.next, parseInt(name, 36) + 1);
    }
    await this.recover();
    await this.markOpen();
  }
  /**
   * Leaves `o/<owner>-<random>` while this process has the snapshotter open, removed when
   * the process exits. A marker whose owner is dead means a process was killed with the store
   * open, perhaps between a layer's rename and its key: only then does opening walk every layer.
   */
  async markOpen() {
    const marker = join8(this.root, "o", `${ownerToken(this.owner)}-${randomBytes3(4).toString("hex")}`);
    await writeFile3(marker, "");
    if (openMarkers.size === 0) process.once("exit", removeOpenMarkers);
    openMarkers.add(marker);
  }
  keyPath(chainId) {
    return join8(this.root, "keys", digestHex(parseDigest(chainId)));
  }
  async idOf(chainId) {
    let target2;
    try {
      target2 = await readlink(this.keyPath(chainId));
    } catch (e) {
      if (errCode(e) === "ENOENT") return void 0;
      throw e;
    }
    const id = target2.slice("../l/".length);
    if (!target2.startsWith("../l/") || !ID_RE.test(id)) {
      throw new TsbuildError("SNAPSHOT_CORRUPT", `snapshot index entry for ${chainId} is damaged (${target2})`, {
        hint: `remove ${this.root} to reset the layer cache`
      });
    }
    return id;
  }
  /** Layer metadata read before: a layer dir's meta.json never changes once the dir is published. */
  metas = /* @__PURE__ */ new Map();
  async meta(chainId) {
    const known2 = this.metas.get(chainId);
    if (known2) {
      const [target2, present] = await Promise.all([
        readlink(this.keyPath(chainId)).catch(() => void 0),
        access(join8(this.root, "l", known2.id, "meta.json")).then(() => true, () => false)
      ]);
      if (target2 === `../l/${known2.id}` && present) return known2;
      this.metas.delete(chainId);
    }
    const m = await this.readMeta(chainId);
    if (m) this.metas.set(chainId, m);
    return m;
  }
  async readMeta(chainId) {
    const id = await this.idOf(chainId);
    if (id === void 0) return void 0;
    let raw;
    try {
      raw = await readFile6(join8(this.root, "l", id, "meta.json"), "utf8");
    } catch (e) {
      if (errCode(e) === "ENOENT") return void 0;
      throw e;
    }
    const m = JSON.parse(raw);
    if (m.chainId !== chainId) return void 0;
    return { chainId, parent: m.parent ? parseDigest(m.parent) : void 0, id };
  }
  async has(chainId) {
    return await this.meta(chainId) !== void 0;
  }
  async get(chainId) {
    const m = await this.meta(chainId);
    return m && { chainId, parent: m.parent, dir: join8(this.root, "l", m.id, "fs") };
  }
  /** The chain from `top` down to its base layer, newest first. */
  async chain(top) {
    const out = [];
    const seen = /* @__PURE__ */ new Set();
    for (let cur = top; cur !== void 0; ) {
      if (seen.has(cur)) throw new TsbuildError("SNAPSHOT_CORRUPT", `snapshot chain of ${top} loops at ${cur}`);
      seen.add(cur);
      const m = await this.meta(cur);
      if (!m) throw notFound(cur);
      out.push(m);
      cur = m.parent;
    }
    return out;
  }
  async tempDir() {
    const dir = join8(this.root, "t", `${ownerToken(this.owner)}-${randomBytes3(4).toString("hex")}`);
    await mkdir3(dir);
    return dir;
  }
  /** Renames a prepared `{fs, meta.json}` dir to a fresh l/<id>, then claims the key. */
  async publish(dir, chainId, parent) {
    this.publishing++;
    try {
      await this.publishUnlocked(dir, chainId, parent);
    } finally {
      this.publishing--;
    }
  }
  async publishUnlocked(dir, chainId, parent) {
    await writeFile3(join8(dir, "meta.json"), JSON.stringify({ chainId, parent: parent ?? null, owner: this.owner }));
    let id;
    for (; ; ) {
      id = (this.next++).toString(36);
      try {
        await rename4(dir, join8(this.root, "l", id));
        break;
      } catch (e) {
        if (errCode(e) !== "ENOTEMPTY" && errCode(e) !== "EEXIST") throw e;
      }
    }
    try {
      await symlink(`../l/${id}`, this.keyPath(chainId));
    } catch (e) {
      if (errCode(e) !== "EEXIST") throw e;
      if (await this.has(chainId)) {
        await this.discard(join8(this.root, "l", id));
        return;
      }
      const link = join8(this.root, "t", `${ownerToken(this.owner)}-${randomBytes3(4).toString("hex")}.lnk`);
      await symlink(`../l/${id}`, link);
      await rename4(link, this.keyPath(chainId));
    }
  }
  /** Atomically moves `path` out of sight, then deletes it. */
  async discard(path8) {
    const trash = await this.tempDir();
    try {
      await rename4(path8, join8(trash, "x"));
    } catch (e) {
      if (errCode(e) !== "ENOENT") throw e;
    }
    await this.removeTree(trash);
  }
  /** Deletes a transient tree, but never through a mount that is still there. */
  async removeTree(dir) {
    const mounted = await mountsUnder(dir);
    for (const mp of mounted) await unmount(mp);
    if (mounted.length > 0 && (await mountsUnder(dir)).length > 0) {
      throw new TsbuildError("SNAPSHOT_BUSY", `cannot remove ${dir}: something is still mounted below it`);
    }
    await rm6(dir, { recursive: true, force: true });
  }
  unpack(chainId, parent, fill) {
    parseDigest(chainId);
    const running = this.inflight.get(chainId);
    if (running) return running;
    const p = this.doUnpack(chainId, parent, fill).finally(() => this.inflight.delete(chainId));
    this.inflight.set(chainId, p);
    return p;
  }
  async doUnpack(chainId, parent, fill) {
    if (await this.has(chainId)) return;
    if (parent !== void 0 && !await this.has(parent)) throw notFound(parent);
    if (this.driver === void 0 && candidateDrivers().length > 1) await this.probeDriver();
    const dir = await this.tempDir();
    try {
      await mkdir3(join8(dir, "fs"), { mode: 493 });
      await fill(join8(dir, "fs"));
      if (await this.has(chainId)) return;
      await this.publish(dir, chainId, parent);
    } finally {
      await this.removeTree(dir);
    }
  }
  async prepare(parent, opts = {}) {
    if (opts.signal?.aborted) throw new CancelledError();
    const chain2 = await this.chain(parent);
    const name = `${ownerToken(this.owner)}-${randomBytes3(4).toString("hex")}`;
    const rel = `a/${name}`;
    const upper = { upper: `${rel}/u`, work: `${rel}/w` };
    const reserved = `,upperdir=${upper.upper},workdir=${upper.work},,volatile`.length + this.flagBytes;
    const lowers = chain2.length === 0 ? ["e"] : await this.lowerDirs(chain2, reserved);
    const dir = join8(this.root, rel);
    await mkdir3(dir);
    await Promise.all(["u", "w", "r"].map((d) => mkdir3(join8(dir, d), { mode: 493 })));
    const used = chain2.map((m) => m.id);
    for (const id of used) this.inUse.set(id, (this.inUse.get(id) ?? 0) + 1);
    try {
      if (opts.signal?.aborted) throw new CancelledError();
      await this.mounter.mount({ lowers, upper }, join8(dir, "r"));
    } catch (e) {
      this.unuse(used);
      await this.removeTree(dir);
      throw e;
    }
    return new OverlayActive(this, dir, parent, used, lowers.map((l) => join8(this.root, l)));
  }
  async merged(top) {
    if (this.lowerFormat.whiteoutFiles) return void 0;
    const chain2 = await this.chain(top);
    const view = new MergedLayers(chain2.map((m) => join8(this.root, "l", m.id, "fs")), this.opaqueXattr);
    return view.usable() ? view : void 0;
  }
  unuse(ids) {
    for (const id of ids) {
      const n = (this.inUse.get(id) ?? 1) - 1;
      if (n <= 0) this.inUse.delete(id);
      else this.inUse.set(id, n);
    }
  }
  /** Called by OverlayActive.commit once unmounted. */
  async commitDir(dir, chainId, parent) {
    parseDigest(chainId);
    try {
      if (!await this.has(chainId)) {
        await Promise.all([rm6(join8(dir, "w"), { recursive: true, force: true }), rmdir(join8(dir, "r")), rename4(join8(dir, "u"), join8(dir, "fs"))]);
        await this.publish(dir, chainId, parent);
      }
    } finally {
      await this.removeTree(dir);
    }
    const info = await this.get(chainId);
    if (!info) throw notFound(chainId);
    return info.dir;
  }
  async removeActive(dir) {
    await this.removeTree(dir);
  }
  /**
   * Lower dir paths (relative to the root), newest first, for a chain. When the chain is deeper
   * than one overlay mount allows, its oldest part is replaced by a flattened copy.
   */
  async lowerDirs(chain2, reservedBytes, reservedLayers = 0) {
    const paths = chain2.map((m) => `l/${m.id}/fs`);
    const budget = this.maxOptionBytes - "lowerdir=".length - reservedBytes;
    const maxLayers = this.maxLayers - reservedLayers;
    if (paths.length <= maxLayers && paths.join(":").length <= budget) return paths;
    const oldest = chain2[chain2.length - 1];
    if (!oldest) throw new InternalError("empty chain has no lower dirs");
    const flatLen = `:f/${oldest.id}`.length + 8;
    let keep = 0;
    let len = 0;
    while (keep < chain2.length - 1 && keep + 1 < maxLayers) {
      const add = (paths[keep] ?? "").length + 1;
      if (len + add + flatLen > budget) break;
      len += add;
      keep++;
    }
    if (keep === 0) throw new InternalError(`overlay limits (${this.maxLayers} layers, ${this.maxOptionBytes} bytes) leave no room`);
    const block = Math.max(1, Math.floor(maxLayers / 2));
    const flatCount = Math.min(chain2.length - 1, Math.ceil((chain2.length - keep) / block) * block);
    keep = chain2.length - flatCount;
    const flat = await this.flattened(chain2.slice(keep));
    return [...paths.slice(0, keep), flat];
  }
  /** f/<id of chain[0]>: the merged contents of the whole chain, made once and cached. */
  flattened(chain2) {
    const top = chain2[0];
    if (!top) throw new InternalError("cannot flatten an empty chain");
    if (chain2.length === 1) return Promise.resolve(`l/${top.id}/fs`);
    const rel = `f/${top.id}`;
    const running = this.flattening.get(rel);
    if (running) return running;
    const p = this.doFlatten(chain2, rel).finally(() => this.flattening.delete(rel));
    this.flattening.set(rel, p);
    return p;
  }
  async doFlatten(chain2, rel) {
    const target2 = join8(this.root, rel);
    if (await exists(target2)) return rel;
    const tmp = await this.tempDir();
    try {
      const lowers = await this.lowerDirs(chain2, this.flagBytes + ":e,".length, 1);
      const mnt = join8(tmp, "m");
      const out = join8(tmp, "out");
      await mkdir3(mnt);
      await mkdir3(out);
      await this.mounter.mount({ lowers: [...lowers, "e"] }, mnt);
      try {
        const r = await runCommand("cp", ["-a", "--", `${mnt}/.`, out]);
        if (r.code !== 0) throw new TsbuildError("SNAPSHOT_FLATTEN", `flattening ${chain2.length} layers failed: ${r.stderr.trim()}`);
      } finally {
        await unmount(mnt);
      }
      try {
        await rename4(out, target2);
      } catch (e) {
        if (errCode(e) !== "ENOTEMPTY" && errCode(e) !== "EEXIST") throw e;
      }
    } finally {
      await this.removeTree(tmp);
    }
    return rel;
  }
  /** Finds the driver with a throwaway mount, when a layer must be unpacked before anything is mounted. */
  async probeDriver() {
    const dir = await this.tempDir();
    try {
      for (const d of ["u", "w", "m"]) await mkdir3(join8(dir, d));
      const rel = `t/${dir.slice(dir.lastIndexOf("/") + 1)}`;
      await this.mounter.mount({ lowers: ["e"], upper: { upper: `${rel}/u`, work: `${rel}/w` } }, join8(dir, "m"));
      await unmount(join8(dir, "m"));
    } finally {
      await this.removeTree(dir);
    }
  }
  async list() {
    const out = [];
    for (const hex2 of await readdir4(join8(this.root, "keys"))) {
      if (!/^[a-f0-9]{64}$/.test(hex2)) continue;
      const info = await this.get(`sha256:${hex2}`);
      if (info) out.push(info);
    }
    return out;
  }
  async remove(chainId) {
    const all = await this.list();
    const doomed = /* @__PURE__ */ new Set([chainId]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const s of all) {
        if (!doomed.has(s.chainId) && s.parent !== void 0 && doomed.has(s.parent)) {
          doomed.add(s.chainId);
          grew = true;
        }
      }
    }
    const present = [...doomed].filter((d) => all.some((s) => s.chainId === d));
    for (const d of present) {
      const m = await this.meta(d);
      if (m && this.inUse.has(m.id)) {
        throw new TsbuildError("SNAPSHOT_IN_USE", `snapshot ${d} is mounted by a running step and cannot be removed`);
      }
    }
    for (const d of present) await this.removeOne(d);
    return present;
  }
  async removeOne(chainId) {
    this.metas.delete(chainId);
    const id = await this.idOf(chainId);
    if (id === void 0) return;
    await rm6(this.keyPath(chainId), { force: true });
    await this.discard(join8(this.root, "f", id));
    await this.discard(join8(this.root, "l", id));
  }
  async prune(keep) {
    const all = await this.list();
    const byChain = new Map(all.map((s) => [s.chainId, s]));
    const kept = /* @__PURE__ */ new Set();
    for (const k of keep) {
      for (let cur = k; cur !== void 0 && !kept.has(cur); cur = byChain.get(cur)?.parent) {
        kept.add(cur);
      }
    }
    const removed = [];
    for (const s of all) {
      if (kept.has(s.chainId)) continue;
      const m = await this.meta(s.chainId);
      if (m && this.inUse.has(m.id)) continue;
      await this.removeOne(s.chainId);
      removed.push(s.chainId);
    }
    await this.sweepLayers();
    return removed;
  }
  /**
   * Removes what dead processes left in the active and temporary areas. Only when one died with
   * the store open (its open marker or a transient dir is still there) can a layer dir be without
   * its key, so only then are the layers swept; `prune` sweeps them always.
   */
  async recover() {
    let crashed = false;
    for (const area of ["a", "t", "o"]) {
      for (const name of await readdir4(join8(this.root, area))) {
        const owner = parseOwnerToken(name);
        if (!owner || await ownerAlive(owner)) continue;
        crashed = true;
        await this.removeTree(join8(this.root, area, name));
      }
    }
    if (crashed) await this.sweepLayers();
  }
  /** Removes layer dirs no key points to (a publish or removal cut short) and orphaned flattenings. */
  async sweepLayers() {
    for (const id of await readdir4(join8(this.root, "l"))) {
      if (!ID_RE.test(id)) continue;
      let meta;
      try {
        meta = JSON.parse(await readFile6(join8(this.root, "l", id, "meta.json"), "utf8"));
      } catch {
        continue;
      }
      if (typeof meta.chainId !== "string" || !/^sha256:[a-f0-9]{64}$/.test(meta.chainId)) continue;
      const linked = await this.idOf(meta.chainId).catch(() => void 0);
      if (linked === id) continue;
      if (meta.owner && await ownerAlive(meta.owner)) {
        const mine = meta.owner.pid === this.owner.pid && meta.owner.start === this.owner.start;
        if (!mine || this.publishing > 0) continue;
      }
      await this.discard(join8(this.root, "l", id));
    }
    for (const id of await readdir4(join8(this.root, "f"))) {
      if (!await exists(join8(this.root, "l", id))) await this.discard(join8(this.root, "f", id));
    }
  }
};

// packages/executor/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/executor/src/run.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { constants as osConstants } from "node:os";
import { lstat as lstat4, mkdir as mkdir6, readdir as readdir6, readFile as readFile9, realpath as realpath2, rm as rm8, rmdir as rmdir3, unlink, utimes as utimes2, writeFile as writeFile5 } from "node:fs/promises";
import { isAbsolute, join as join12, posix, resolve } from "node:path";

// packages/executor/src/rootpath.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { lstat as lstat3, mkdir as mkdir4 } from "node:fs/promises";
import { resolve as resolvePath5 } from "node:path";
async function resolveInRoot(root, unsafePath) {
  const base = resolvePath5(root);
  let host;
  try {
    host = secureJoin(base, unsafePath, { followLast: true });
  } catch (e) {
    if (!(e instanceof UnsafeArchiveError)) throw e;
    const loop = /symbolic links/.test(e.message);
    throw new TsbuildError(loop ? "PATH_LOOP" : "PATH_INVALID", `${unsafePath} in the container: ${e.message}`, { cause: e });
  }
  return host === base ? "/" : host.slice(base === "/" ? 0 : base.length);
}
function errCode2(e) {
  return e?.code;
}
function isUnderProc(containerPath2) {
  return containerPath2 === "/proc" || containerPath2.startsWith("/proc/");
}
async function mkdirInRoot(root, containerPath2) {
  let cur = "/";
  for (const part of containerPath2.split("/").filter(Boolean)) {
    cur = await resolveInRoot(root, `${cur === "/" ? "" : cur}/${part}`);
    try {
      await mkdir4(root + cur, { mode: 493 });
    } catch (e) {
      if (errCode2(e) !== "EEXIST") throw e;
      if (!(await lstat3(root + cur)).isDirectory()) {
        throw new TsbuildError("NOT_A_DIRECTORY", `${containerPath2}: ${cur} exists in the container and is not a directory`);
      }
    }
  }
}

// packages/executor/src/usage.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { mkdir as mkdir5, readdir as readdir5, readFile as readFile7, rmdir as rmdir2, writeFile as writeFile4 } from "node:fs/promises";
import { join as join9 } from "node:path";
var ROOT = "/sys/fs/cgroup";
async function ownCgroups() {
  const out = /* @__PURE__ */ new Map();
  const text = await readFile7("/proc/self/cgroup", "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of m[1].split(",")) out.set(c, m[2]);
  }
  return out;
}
var layout;
function accounting() {
  return layout ??= (async () => {
    const own = await ownCgroups();
    if (await readFile7(join9(ROOT, "cgroup.controllers"), "utf8").catch(() => void 0) !== void 0) {
      const base = join9(ROOT, own.get("") ?? "/");
      return { version: 2, cpuBase: base, memoryBase: base, allBases: [base] };
    }
    const allBases = [];
    for (const name of await readdir5(ROOT).catch(() => [])) {
      const key = name === "unified" ? "" : name.startsWith("name=") ? name : name.split(",")[0] ?? name;
      const inner = own.get(key) ?? own.get(`name=${name}`) ?? "/";
      allBases.push(join9(ROOT, name, inner));
    }
    for (const cpu of ["cpu,cpuacct", "cpuacct"]) {
      const cpuRoot = join9(ROOT, cpu);
      if (await readFile7(join9(cpuRoot, "cpuacct.usage"), "utf8").catch(() => void 0) === void 0) continue;
      return { version: 1, cpuBase: join9(cpuRoot, own.get("cpuacct") ?? "/"), memoryBase: join9(ROOT, "memory", own.get("memory") ?? "/"), allBases };
    }
    return void 0;
  })();
}
var UsageCgroup = class _UsageCgroup {
  constructor(h, runtimePath) {
    this.h = h;
    this.runtimePath = runtimePath;
  }
  h;
  runtimePath;
  /** Undefined where cgroups cannot be written (an unprivileged user without a delegated subtree). */
  static async create(id) {
    const a = await accounting();
    if (!a) return void 0;
    const rel = join9("tsbuild", id);
    const h = { version: a.version, cpu: join9(a.cpuBase, rel), memory: join9(a.memoryBase, rel), all: a.allBases.map((b) => join9(b, rel)) };
    try {
      await Promise.all([.../* @__PURE__ */ new Set([h.cpu, h.memory])].map((dir) => mkdir5(dir, { recursive: true })));
      if (h.version === 2) {
        for (const dir of [join9(a.memoryBase, "tsbuild"), h.memory]) {
          await writeFile4(join9(dir, "cgroup.subtree_control"), "+memory +cpu +pids").catch(() => void 0);
        }
      }
    } catch {
      return void 0;
    }
    return new _UsageCgroup(h, `${rel}/c`);
  }
  async read() {
    try {
      if (this.h.version === 1) {
        const [usage, max2] = await Promise.all([
          readFile7(join9(this.h.cpu, "cpuacct.usage"), "utf8"),
          readFile7(join9(this.h.memory, "memory.max_usage_in_bytes"), "utf8").catch(() => "")
        ]);
        const cpu = Number(usage.trim()) / 1e9;
        const peak2 = Number(max2.trim());
        return { cpuSeconds: cpu, memoryPeakBytes: Number.isFinite(peak2) && peak2 > 0 ? peak2 : void 0 };
      }
      const [stat10, max] = await Promise.all([
        readFile7(join9(this.h.cpu, "cpu.stat"), "utf8"),
        readFile7(join9(this.h.memory, "memory.peak"), "utf8").catch(() => "")
      ]);
      const usec = Number(/^usage_usec (\d+)$/m.exec(stat10)?.[1] ?? NaN);
      const peak = Number(max.trim());
      if (!Number.isFinite(usec)) return void 0;
      return { cpuSeconds: usec / 1e6, memoryPeakBytes: Number.isFinite(peak) && peak > 0 ? peak : void 0 };
    } catch {
      return void 0;
    }
  }
  /** Removes this cgroup (the runtime has removed its child by now); failures are left for cleanup. */
  async remove() {
    await Promise.all(
      this.h.all.map(async (dir) => {
        await rmdir2(join9(dir, "c")).catch(() => void 0);
        await rmdir2(dir).catch(() => void 0);
      })
    );
  }
};

// packages/executor/src/runtime.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { constants as constants2 } from "node:fs";
import { access as access2, rm as rm7, stat as stat4 } from "node:fs/promises";
import { basename as basename2, delimiter, join as join10 } from "node:path";
var childProcess4 = () => process.getBuiltinModule("node:child_process");
function runCommand2(cmd, args) {
  return new Promise((resolve3, reject) => {
    const child = childProcess4().spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => stdout += d);
    child.stderr.setEncoding("utf8").on("data", (d) => stderr += d);
    child.once("error", reject);
    child.once("close", (code) => resolve3({ code: code ?? 1, stdout, stderr }));
  });
}
async function isExecutable(p) {
  try {
    await access2(p, constants2.X_OK);
    return (await stat4(p)).isFile();
  } catch {
    return false;
  }
}
function notFound2(runtime) {
  const name = basename2(runtime);
  return new TsbuildError("RUNTIME_NOT_FOUND", `runtime '${runtime}' not found`, {
    hint: name === "runc" ? "apt-get install runc" : `install ${name} or pass the runtime's full path`
  });
}
async function findRuntime(runtime) {
  if (runtime.includes("/")) {
    if (await isExecutable(runtime)) return runtime;
    throw notFound2(runtime);
  }
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const dir of dirs) {
    if (!dir.startsWith("/")) continue;
    const p = join10(dir, runtime);
    if (await isExecutable(p)) return p;
  }
  throw notFound2(runtime);
}
function atLeast(version, min) {
  const parts = version.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const a = parts[i] ?? 0;
    const b = min[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}
var infoCache = /* @__PURE__ */ new Map();
function runtimeInfo(runtime = "runc") {
  let p = infoCache.get(runtime);
  if (!p) {
    p = probe(runtime);
    infoCache.set(runtime, p);
    p.catch(() => infoCache.delete(runtime));
  }
  return p;
}
async function probe(runtime) {
  const path8 = await findRuntime(runtime);
  const r = await runCommand2(path8, ["--version"]);
  const m = /^(\S+) version v?(\d+\.\d+\.\d+)/m.exec(r.stdout);
  const name = m?.[1] ?? basename2(path8);
  const version = m?.[2];
  const fixesCve202421626 = name !== "runc" || version !== void 0 && atLeast(version, [1, 1, 12]);
  return { path: path8, name, version, fixesCve202421626 };
}
function globalArgs(opts) {
  return opts.runtimeRoot === void 0 ? [] : ["--root", opts.runtimeRoot];
}
var ID_PREFIX = "tsbuild-";
var counter = 0;
function newContainerId() {
  return `${ID_PREFIX}${process.pid}-${counter++}-${Math.random().toString(36).slice(2, 8)}`;
}
function ownerPid(id) {
  const m = /^tsbuild-(\d+)-/.exec(id);
  return m ? Number(m[1]) : void 0;
}
function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}
async function destroyContainer(path8, id, opts) {
  await runCommand2(path8, [...globalArgs(opts), "kill", id, "KILL"]);
  const r = await runCommand2(path8, [...globalArgs(opts), "delete", "--force", id]);
  if (r.code !== 0 && !/does not exist|not found/i.test(r.stderr)) {
    throw new TsbuildError("RUNTIME", `deleting container ${id} failed: ${r.stderr.trim()}`);
  }
}
async function cleanupContainers(runtime = "runc", opts = {}) {
  const { path: path8 } = await runtimeInfo(runtime);
  const r = await runCommand2(path8, [...globalArgs(opts), "list", "--format", "json"]);
  if (r.code !== 0) throw new TsbuildError("RUNTIME", `${runtime} list failed: ${r.stderr.trim()}`);
  const listed = JSON.parse(r.stdout.trim() || "null") ?? [];
  const removed = [];
  for (const c of listed) {
    if (typeof c.id !== "string") continue;
    const pid = ownerPid(c.id);
    if (pid === void 0 || pidAlive(pid)) continue;
    await destroyContainer(path8, c.id, opts);
    if (typeof c.bundle === "string" && c.bundle.startsWith("/") && basename2(c.bundle) === c.id) {
      await rm7(c.bundle, { recursive: true, force: true });
    }
    removed.push(c.id);
  }
  return removed;
}

// packages/executor/src/rootless.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { constants as fsc2 } from "node:fs";
import { access as access3, readFile as readFile8 } from "node:fs/promises";
import { join as join11 } from "node:path";
function defaultRuntimeRoot(stateDir) {
  return inUserNamespace() ? join11(stateDir, "runc") : void 0;
}
var CGROUP = "/sys/fs/cgroup";
var support;
function cgroupLimitSupport() {
  return support ??= (async () => {
    if (!inUserNamespace()) return { usable: true };
    const v2 = await readFile8(join11(CGROUP, "cgroup.controllers"), "utf8").catch(() => void 0);
    if (v2 === void 0) {
      return { usable: false, reason: "this machine uses cgroup v1 (or a hybrid of v1 and v2), which is never delegated to an ordinary user" };
    }
    const own = /^0::(.*)$/m.exec(await readFile8("/proc/self/cgroup", "utf8").catch(() => ""))?.[1];
    if (own === void 0) return { usable: false, reason: "the cgroup of this process is not in the cgroup v2 hierarchy" };
    const dir = join11(CGROUP, own);
    try {
      await access3(dir, fsc2.W_OK);
      await access3(join11(dir, "cgroup.subtree_control"), fsc2.W_OK);
    } catch {
      return { usable: false, reason: `the cgroup ${own} is not delegated to this user (it is not writable)` };
    }
    const handed = (await readFile8(join11(dir, "cgroup.subtree_control"), "utf8").catch(() => "")).split(/\s+/);
    const missing = ["memory", "cpu", "pids"].filter((c) => !handed.includes(c));
    if (missing.length > 0) {
      return { usable: false, reason: `the delegated cgroup ${own} does not hand the ${missing.join(", ")} controller${missing.length > 1 ? "s" : ""} to its children (cgroup.subtree_control)` };
    }
    return { usable: true };
  })();
}
function hasLimits(l) {
  return l !== void 0 && (l.memory !== void 0 || l.cpuQuota !== void 0 || l.cpuPeriod !== void 0 || l.pidsLimit !== void 0);
}
async function unappliedLimits(l) {
  if (!hasLimits(l)) return void 0;
  const s = await cgroupLimitSupport();
  return s.usable ? void 0 : `--memory, --cpus and --pids-limit are not applied: ${s.reason}`;
}
var LOCKABLE = ["nosuid", "nodev", "noexec", "noatime", "nodiratime", "strictatime"];
function lockedMountFlags(path8, mountinfo) {
  let best;
  for (const line of mountinfo.split("\n")) {
    const fields2 = line.split(" ");
    const point = fields2[4]?.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    const opts = fields2[5];
    if (point === void 0 || opts === void 0) continue;
    const under = point === "/" || path8 === point || path8.startsWith(point.endsWith("/") ? point : `${point}/`);
    if (under && (best === void 0 || point.length >= best.point.length)) best = { point, flags: opts.split(",") };
  }
  return LOCKABLE.filter((f) => best?.flags.includes(f));
}
function rootlessStartHint(failure) {
  if (!inUserNamespace()) return void 0;
  if (/mount(ing)? "?proc"? .*operation not permitted/i.test(failure)) {
    return "a new /proc cannot be mounted where the one above is masked: in a container, unmask /proc (Kubernetes: securityContext.procMount: Unmasked; podman: --security-opt unmask=ALL)";
  }
  if (/(sethostname|operation not permitted)/i.test(failure) && !/mount/i.test(failure)) {
    return "a seccomp profile may block what a container needs to start (sethostname, unshare, mount): run tsbuild with seccomp unconfined (Kubernetes: seccompProfile: Unconfined; podman: --security-opt seccomp=unconfined)";
  }
  if (/mount.*permission denied/i.test(failure)) {
    return "an AppArmor profile may deny mounts: run tsbuild unconfined (Kubernetes: appArmorProfile: Unconfined; podman: --security-opt apparmor=unconfined)";
  }
  return void 0;
}

// packages/executor/src/spec.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE"
];
var MASKED_PATHS = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap"
];
var READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
var DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
var RLIM_INFINITY = 2n ** 64n - 1n;
var RLIMIT_TYPES = [
  "RLIMIT_AS",
  "RLIMIT_CORE",
  "RLIMIT_CPU",
  "RLIMIT_DATA",
  "RLIMIT_FSIZE",
  "RLIMIT_LOCKS",
  "RLIMIT_MEMLOCK",
  "RLIMIT_MSGQUEUE",
  "RLIMIT_NICE",
  "RLIMIT_NOFILE",
  "RLIMIT_NPROC",
  "RLIMIT_RSS",
  "RLIMIT_RTPRIO",
  "RLIMIT_RTTIME",
  "RLIMIT_SIGPENDING",
  "RLIMIT_STACK"
];
function buildSpec(i) {
  const caps = [...DEFAULT_CAPABILITIES];
  const userCaps = i.uid === 0 ? caps : [];
  const env = i.env.some((e) => e.startsWith("PATH=")) ? i.env : [DEFAULT_PATH, ...i.env];
  const namespaces = [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }];
  if (i.network === "none") namespaces.push({ type: "network" });
  const resources = { devices: [{ allow: false, access: "rwm" }] };
  if (i.limits.memory !== void 0) resources.memory = { limit: i.limits.memory };
  if (i.limits.cpuQuota !== void 0 || i.limits.cpuPeriod !== void 0) {
    resources.cpu = {};
    if (i.limits.cpuQuota !== void 0) resources.cpu.quota = i.limits.cpuQuota;
    if (i.limits.cpuPeriod !== void 0) resources.cpu.period = i.limits.cpuPeriod;
  }
  if (i.limits.pidsLimit !== void 0) resources.pids = { limit: i.limits.pidsLimit };
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: i.uid, gid: i.gid, ...i.additionalGids.length > 0 ? { additionalGids: i.additionalGids } : {} },
      args: i.args,
      env,
      cwd: i.cwd,
      capabilities: { bounding: caps, effective: userCaps, permitted: userCaps },
      noNewPrivileges: true,
      // Only the limits asked for: the others are inherited from this process, since a runtime
      // cannot raise a hard limit without CAP_SYS_RESOURCE (which root in a container may lack).
      ...i.rlimits && i.rlimits.length > 0 ? { rlimits: i.rlimits.map((r) => ({ type: r.type, soft: r.soft, hard: r.hard })) } : {}
    },
    root: { path: i.rootfs, readonly: false },
    hostname: i.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
      },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", i.shmSize !== void 0 ? `size=${i.shmSize}` : "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      i.rootless ? { destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] } : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
      ...i.mounts
    ],
    linux: {
      namespaces,
      ...i.cgroupsPath !== void 0 ? { cgroupsPath: i.cgroupsPath } : {},
      resources,
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS
    }
  };
}
function specJson(spec) {
  return JSON.stringify(spec, (_k, v) => typeof v === "bigint" ? `\0big:${v}` : v).replace(/"\\u0000big:(\d+)"/g, "$1");
}

// packages/executor/src/run.ts
var childProcess5 = () => process.getBuiltinModule("node:child_process");
var RUNTIME_PATHS = ["/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc", "/dev", "/sys"];
var SIGNAL_NAMES = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));
function errCode3(e) {
  return e?.code;
}
function badInput(message) {
  return new TsbuildError("BAD_RUN", message);
}
function containerPath(p, what) {
  if (!p.startsWith("/")) throw badInput(`${what} ${JSON.stringify(p)} must be an absolute path`);
  return posix.normalize(p);
}
async function recordStubs(root, paths) {
  const all = /* @__PURE__ */ new Set();
  for (const p of paths) {
    const parts = p.split("/").filter(Boolean);
    for (let i = 1; i <= parts.length; i++) all.add(`/${parts.slice(0, i).join("/")}`);
  }
  const missing = /* @__PURE__ */ new Set();
  const parentTimes = /* @__PURE__ */ new Map();
  for (const p of all) {
    const resolved = await resolveInRoot(root, p);
    try {
      await lstat4(root + resolved);
    } catch (e) {
      if (errCode3(e) !== "ENOENT" && errCode3(e) !== "ENOTDIR") throw e;
      missing.add(resolved);
      const parent = posix.dirname(resolved);
      try {
        const st = await lstat4(root + parent, { bigint: true });
        if (st.isDirectory()) {
          parentTimes.set(parent, { atime: Number(st.atimeNs) / 1e9, mtime: Number(st.mtimeNs) / 1e9 });
        }
      } catch (e2) {
        if (errCode3(e2) !== "ENOENT" && errCode3(e2) !== "ENOTDIR") throw e2;
      }
    }
  }
  return { missing: [...missing], parentTimes };
}
async function removeStubs(root, stubs) {
  for (const p of [...stubs.missing].sort((a, b) => b.length - a.length)) {
    const host = root + await resolveInRoot(root, p);
    let st;
    try {
      st = await lstat4(host);
    } catch {
      continue;
    }
    if (st.isFile() && st.size === 0) await unlink(host);
    else if (st.isDirectory() && (await readdir6(host)).length === 0) await rmdir3(host);
  }
  for (const [dir, t] of stubs.parentTimes) {
    const host = root + await resolveInRoot(root, dir);
    await utimes2(host, t.atime, t.mtime).catch(() => void 0);
  }
}
function hostsFile(hostname, extra) {
  const lines = [
    `127.0.0.1	localhost ${hostname}`,
    "::1	localhost ip6-localhost ip6-loopback",
    ...extra.map((e) => `${e.ip}	${e.host}`)
  ];
  return `${lines.join("\n")}
`;
}
function checkLine(what, v) {
  if (/[\n\0]/.test(v)) throw badInput(`${what} ${JSON.stringify(v)} contains a newline or NUL`);
  return v;
}
async function run2(given) {
  const runtimeRoot = given.runtimeRoot ?? defaultRuntimeRoot(given.stateDir);
  const opts = runtimeRoot === void 0 ? given : { ...given, runtimeRoot };
  if (opts.signal?.aborted) throw new CancelledError();
  if (opts.args.length === 0 || opts.args[0] === "") throw badInput("no program to run");
  const rt = await runtimeInfo(opts.runtime ?? "runc");
  const rootfs = resolve(opts.rootfs);
  const network = opts.network ?? "host";
  const hostname = checkLine("hostname", opts.hostname ?? "tsbuild");
  const user = opts.user ?? { uid: 0, gid: 0 };
  for (const id2 of [user.uid, user.gid, ...user.additionalGids ?? []]) {
    if (!Number.isInteger(id2) || id2 < 0 || id2 > 4294967294) throw badInput(`invalid user or group id ${id2}`);
  }
  for (const e of opts.env ?? []) {
    if (!/^[^=\0]+=/.test(e) || e.includes("\0")) throw badInput(`environment entry ${JSON.stringify(e)} is not KEY=value`);
  }
  const cwd = await resolveInRoot(rootfs, containerPath(opts.cwd ?? "/", "working directory"));
  if (isUnderProc(cwd)) {
    throw new TsbuildError("UNSAFE_CWD", `working directory ${opts.cwd} resolves to ${cwd}, inside /proc`, {
      hint: "a working directory under /proc can escape the container (CVE-2024-21626)"
    });
  }
  const program = opts.args[0] ?? "";
  if (!rt.fixesCve202421626 && program.startsWith("/") && isUnderProc(await resolveInRoot(rootfs, program))) {
    throw new TsbuildError("UNSAFE_PROGRAM", `refusing to run ${program}: a program under /proc can escape ${rt.name} ${rt.version}`, {
      hint: "upgrade runc to 1.1.12 or later (CVE-2024-21626)"
    });
  }
  if (opts.shmSize !== void 0 && (!Number.isSafeInteger(opts.shmSize) || opts.shmSize <= 0)) throw badInput(`invalid /dev/shm size ${opts.shmSize}`);
  await checkRlimits(opts.rlimits ?? []);
  const mounts = [];
  const mountPoints = [];
  for (const m of opts.mounts ?? []) {
    const dest = containerPath(m.destination, "mount target");
    if (dest === "/" || isUnderProc(dest) || isUnderProc(await resolveInRoot(rootfs, dest))) {
      throw badInput(`cannot mount over ${dest}`);
    }
    mountPoints.push(dest);
    if (m.type === "bind") {
      if (!isAbsolute(m.source)) throw badInput(`bind mount source ${m.source} must be absolute`);
      mounts.push({ destination: dest, type: "bind", source: m.source, options: ["rbind", m.readonly ? "ro" : "rw"] });
    } else {
      const options = ["nosuid", "nodev", `mode=${(m.mode ?? 493).toString(8)}`];
      if (m.size !== void 0) options.push(`size=${m.size}`);
      mounts.push({ destination: dest, type: "tmpfs", source: "tmpfs", options });
    }
  }
  for (const e of opts.extraHosts ?? []) checkLine("host entry", `${e.ip} ${e.host}`);
  const rootless = inUserNamespace();
  const id = newContainerId();
  const bundle = join12(resolve(opts.stateDir), id);
  const makeBundle = (async () => {
    await mkdir6(opts.stateDir, { recursive: true });
    await mkdir6(bundle, { mode: 448 });
    const resolv = network === "host" ? await readFile9("/etc/resolv.conf", "utf8").catch(() => "") : "";
    await Promise.all([
      writeFile5(join12(bundle, "resolv.conf"), resolv, { mode: 420 }),
      writeFile5(join12(bundle, "hosts"), hostsFile(hostname, opts.extraHosts ?? []), { mode: 420 }),
      writeFile5(join12(bundle, "hostname"), `${hostname}
`, { mode: 420 })
    ]);
  })();
  const makeUsage = UsageCgroup.create(id);
  const makeStubs = (async () => {
    await mkdirInRoot(rootfs, cwd);
    return recordStubs(rootfs, [...RUNTIME_PATHS, ...mountPoints]);
  })();
  const cgroupsOk = rootless ? cgroupLimitSupport().then((c) => c.usable) : Promise.resolve(true);
  const [made, usageMade, stubsMade, cgroupsMade] = await Promise.allSettled([makeBundle, makeUsage, makeStubs, cgroupsOk]);
  const usage = usageMade.status === "fulfilled" ? usageMade.value : void 0;
  const stubs = stubsMade.status === "fulfilled" ? stubsMade.value : { missing: [], parentTimes: /* @__PURE__ */ new Map() };
  let ranToEnd = false;
  try {
    for (const r of [made, usageMade, stubsMade, cgroupsMade]) if (r.status === "rejected") throw r.reason;
    const cgroups = cgroupsMade.status === "fulfilled" && cgroupsMade.value;
    const etcMounts = (opts.etcFiles === false ? [] : ["resolv.conf", "hosts", "hostname"]).map((f) => ({
      destination: `/etc/${f}`,
      type: "bind",
      source: join12(bundle, f),
      options: ["rbind", "ro"]
    }));
    const allMounts = [...etcMounts, ...mounts];
    if (rootless) {
      const mountinfo = await readFile9("/proc/self/mountinfo", "utf8");
      for (const m of allMounts) {
        if (m.type !== "bind" || !m.options?.includes("ro")) continue;
        const locked = lockedMountFlags(await realpath2(m.source).catch(() => m.source), mountinfo);
        m.options = [...m.options, ...locked.filter((f) => !m.options?.includes(f))];
      }
    }
    const spec = buildSpec({
      rootfs,
      args: opts.args,
      env: opts.env ?? [],
      cwd,
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids ?? [],
      hostname,
      network,
      mounts: allMounts,
      // A rootless runc fails on a named cgroup it cannot make, but goes on without one it picked.
      cgroupsPath: usage?.runtimePath ?? (cgroups ? `tsbuild/${id}` : void 0),
      limits: cgroups ? opts.limits ?? {} : {},
      rootless,
      ...opts.rlimits ? { rlimits: opts.rlimits } : {},
      ...opts.shmSize !== void 0 ? { shmSize: opts.shmSize } : {}
    });
    await writeFile5(join12(bundle, "config.json"), specJson(spec));
    const result = await runContainer(rt.path, id, bundle, opts);
    ranToEnd = true;
    const used = await usage?.read();
    return used ? { ...result, usage: used } : result;
  } finally {
    if (!ranToEnd) await runCommand2(rt.path, [...globalArgs(opts), "delete", "--force", id]).catch(() => void 0);
    const cleaned = await Promise.allSettled([usage?.remove(), removeStubs(rootfs, stubs), rm8(bundle, { recursive: true, force: true })]);
    for (const r of cleaned) if (r.status === "rejected") throw r.reason;
  }
}
var LIMIT_ROWS = {
  RLIMIT_CPU: "Max cpu time",
  RLIMIT_FSIZE: "Max file size",
  RLIMIT_DATA: "Max data size",
  RLIMIT_STACK: "Max stack size",
  RLIMIT_CORE: "Max core file size",
  RLIMIT_RSS: "Max resident set",
  RLIMIT_NPROC: "Max processes",
  RLIMIT_NOFILE: "Max open files",
  RLIMIT_MEMLOCK: "Max locked memory",
  RLIMIT_AS: "Max address space",
  RLIMIT_LOCKS: "Max file locks",
  RLIMIT_SIGPENDING: "Max pending signals",
  RLIMIT_MSGQUEUE: "Max msgqueue size",
  RLIMIT_NICE: "Max nice priority",
  RLIMIT_RTPRIO: "Max realtime priority",
  RLIMIT_RTTIME: "Max realtime timeout"
};
var CAP_SYS_RESOURCE = 24;
function limitText(n) {
  return n === RLIM_INFINITY ? "unlimited" : String(n);
}
async function checkRlimits(limits) {
  if (limits.length === 0) return;
  const [limitsText, status, nrOpen] = await Promise.all([
    readFile9("/proc/self/limits", "utf8").catch(() => ""),
    readFile9("/proc/self/status", "utf8").catch(() => ""),
    readFile9("/proc/sys/fs/nr_open", "utf8").catch(() => "")
  ]);
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  const canRaise = capEff !== void 0 && (BigInt(`0x${capEff}`) >> BigInt(CAP_SYS_RESOURCE) & 1n) === 1n;
  const seen = /* @__PURE__ */ new Set();
  for (const l of limits) {
    const name = l.type.replace(/^RLIMIT_/, "").toLowerCase();
    const shown3 = `ulimit ${name}=${limitText(l.soft)}:${limitText(l.hard)}`;
    if (!RLIMIT_TYPES.includes(l.type)) throw badInput(`unknown rlimit type ${JSON.stringify(l.type)}`);
    if (seen.has(l.type)) throw badInput(`${shown3}: ${name} is limited twice`);
    seen.add(l.type);
    for (const v of [l.soft, l.hard]) if (v < 0n || v > RLIM_INFINITY) throw badInput(`${shown3}: ${v} is out of range`);
    if (l.soft > l.hard) throw badInput(`${shown3}: the soft limit is above the hard limit`);
    if (l.type === "RLIMIT_NOFILE" && /^\d+\s*$/.test(nrOpen) && l.hard > BigInt(nrOpen.trim())) {
      throw new TsbuildError("RLIMIT", `${shown3}: the kernel allows at most ${nrOpen.trim()} open files (fs.nr_open)`, { hint: `ask for at most nofile=${nrOpen.trim()}` });
    }
    const rowName = LIMIT_ROWS[l.type];
    const row = rowName === void 0 ? null : new RegExp(`^${rowName}\\s+(\\S+)\\s+(\\S+)`, "m").exec(limitsText);
    const hardNow = row?.[2] === void 0 ? void 0 : row[2] === "unlimited" ? RLIM_INFINITY : /^\d+$/.test(row[2]) ? BigInt(row[2]) : void 0;
    if (!canRaise && hardNow !== void 0 && l.hard > hardNow) {
      throw new TsbuildError("RLIMIT", `${shown3}: the hard limit here is ${limitText(hardNow)}, and raising it needs CAP_SYS_RESOURCE, which tsbuild's process does not have`, {
        hint: `ask for at most ${name}=${limitText(hardNow)} (a process may lower its limits, never raise its hard limit without that capability)`
      });
    }
  }
}
async function runContainer(runtime, id, bundle, opts) {
  if (opts.signal?.aborted) throw new CancelledError();
  const log = join12(bundle, "runtime.log");
  const args = [...globalArgs(opts), "--log", log, "--log-format", "json", "run", "--bundle", bundle, id];
  const child = childProcess5().spawn(runtime, args, {
    cwd: bundle,
    stdio: ["ignore", opts.stdout ? "pipe" : "ignore", opts.stderr ? "pipe" : "ignore"]
  });
  if (opts.stdout) child.stdout?.pipe(opts.stdout, { end: false });
  if (opts.stderr) child.stderr?.pipe(opts.stderr, { end: false });
  let exited = false;
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    void (async () => {
      for (let i = 0; !exited; i++) {
        await runCommand2(runtime, [...globalArgs(opts), "kill", id, "KILL"]);
        if (i === 50) child.kill("SIGKILL");
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  };
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  let code;
  try {
    code = await new Promise((res, rej) => {
      child.once("error", rej);
      child.once("close", (c) => res(c));
    });
  } finally {
    exited = true;
    opts.signal?.removeEventListener("abort", onAbort);
  }
  if (aborted) throw new CancelledError();
  const exitCode = code ?? 137;
  if (exitCode !== 0) {
    const failure = await runtimeFailure(log);
    if (failure !== void 0) {
      const hint = rootlessStartHint(failure);
      throw new TsbuildError("RUNTIME_START", `cannot run ${JSON.stringify(opts.args[0])}: ${failure}`, hint === void 0 ? {} : { hint });
    }
  }
  const sig = exitCode > 128 ? SIGNAL_NAMES.get(exitCode - 128) : void 0;
  return sig === void 0 ? { exitCode } : { exitCode, signal: sig };
}
async function runtimeFailure(log) {
  let text;
  try {
    text = await readFile9(log, "utf8");
  } catch {
    return void 0;
  }
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.level === "error" || entry.level === "fatal") {
        return (entry.msg ?? "the runtime failed").replace(/^runc run failed: /, "");
      }
    } catch {
      continue;
    }
  }
  return void 0;
}

// packages/builder/src/flags.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { statSync as statSync2 } from "node:fs";
import { isAbsolute as isAbsolute2, resolve as resolvePath7 } from "node:path";

// packages/cache/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/cache/src/gha.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash9 } from "node:crypto";

// packages/registry/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/registry/src/reference.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DOCKER_HUB = "docker.io";
var DOCKER_HUB_API = "registry-1.docker.io";
var DEFAULT_TAG = "latest";
var COMPONENT_RE2 = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
var TAG_RE2 = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
var HOST_LABEL = "(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])";
var DOMAIN_RE2 = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]+)?$`);
var MAX_NAME = 255;
function bad2(input, why) {
  return new UsageError(`invalid image reference ${JSON.stringify(input)}: ${why}`, {
    hint: "references look like [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], with a lower-case NAME"
  });
}
function parseReference(input) {
  if (input.length === 0) throw bad2(input, "it is empty");
  if (/\s/.test(input)) throw bad2(input, "it contains white space");
  let rest = input;
  let digest;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(d)) throw bad2(input, `"${d}" is not a digest`);
    if (!d.startsWith("sha256:")) throw bad2(input, `digest algorithm "${d.split(":")[0]}" is not supported (only sha256)`);
    if (!/^sha256:[a-f0-9]{64}$/.test(d)) throw bad2(input, "a sha256 digest has 64 lower-case hex digits");
    digest = d;
  }
  let tag;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE2.test(tag)) throw bad2(input, `"${tag}" is not a valid tag`);
  }
  if (rest.length === 0) throw bad2(input, "the repository name is empty");
  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first === "localhost" || /[.:]/.test(first) || /[A-Z]/.test(first)) {
      if (!DOMAIN_RE2.test(first)) throw bad2(input, `"${first}" is not a valid registry host`);
      registry = first;
      repository = rest.slice(slash + 1);
    }
  }
  if (registry === "index.docker.io") registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (repository.length === 0) throw bad2(input, "the repository name is empty");
  for (const component of repository.split("/")) {
    if (COMPONENT_RE2.test(component)) continue;
    if (COMPONENT_RE2.test(component.toLowerCase())) throw bad2(input, "repository name must be lowercase");
    throw bad2(input, `"${component}" is not a valid repository path component`);
  }
  if (registry.length + 1 + repository.length > MAX_NAME) throw bad2(input, `the name is longer than ${MAX_NAME} characters`);
  if (tag === void 0 && digest === void 0) tag = DEFAULT_TAG;
  return makeReference(registry, repository, tag, digest);
}
function makeReference(registry, repository, tag, digest) {
  const suffix = (tag === void 0 ? "" : `:${tag}`) + (digest === void 0 ? "" : `@${digest}`);
  let short2 = `${registry}/${repository}`;
  if (registry === DOCKER_HUB) short2 = repository.startsWith("library/") && repository.split("/").length === 2 ? repository.slice(8) : repository;
  const full = `${registry}/${repository}${suffix}`;
  return {
    registry,
    repository,
    tag,
    digest,
    familiar: short2 + suffix,
    identifier: digest ?? tag ?? DEFAULT_TAG,
    toString: () => full
  };
}
function withDigest(ref, digest) {
  return makeReference(ref.registry, ref.repository, void 0, digest);
}
function withTag(ref, tag) {
  if (!TAG_RE2.test(tag)) throw bad2(tag, "not a valid tag");
  return makeReference(ref.registry, ref.repository, tag, void 0);
}
function registryApiHost(registry) {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

// packages/registry/src/client.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFileSync as readFileSync5 } from "node:fs";
import { setTimeout as sleep2 } from "node:timers/promises";

// packages/registry/src/challenge.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function parseChallenges(values) {
  const out = [];
  for (const value of values) {
    let i = 0;
    const s = value;
    const skipWs = () => {
      while (i < s.length && (s[i] === " " || s[i] === "	")) i++;
    };
    const readToken = () => {
      const start = i;
      while (i < s.length && /[A-Za-z0-9!#$%&'*+.^_`|~-]/.test(s[i] ?? "")) i++;
      return s.slice(start, i);
    };
    let current;
    while (i < s.length) {
      skipWs();
      if (s[i] === ",") {
        i++;
        continue;
      }
      const word = readToken();
      if (word === "") {
        i++;
        continue;
      }
      skipWs();
      if (s[i] === "=" && current !== void 0) {
        i++;
        skipWs();
        let v = "";
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === "\\" && i + 1 < s.length) i++;
            v += s[i];
            i++;
          }
          i++;
        } else {
          const start = i;
          while (i < s.length && s[i] !== "," && s[i] !== " ") i++;
          v = s.slice(start, i);
        }
        current.params[word.toLowerCase()] = v;
      } else {
        current = { scheme: word.toLowerCase(), params: {} };
        out.push(current);
      }
    }
  }
  return out;
}

// packages/registry/src/credentials.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile10, mkdir as mkdir7 } from "node:fs/promises";
import { homedir as homedir2 } from "node:os";
import { dirname as dirname2, join as join13 } from "node:path";
var childProcess6 = () => process.getBuiltinModule("node:child_process");
var HUB_KEY = "https://index.docker.io/v1/";
var HUB_NAMES = /* @__PURE__ */ new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);
function dockerConfigPath(opts = {}) {
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? env["DOCKER_CONFIG"] ?? join13(env["HOME"] ?? homedir2(), ".docker");
  return join13(dir, "config.json");
}
function keyHost(key) {
  const host = key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
  return HUB_NAMES.has(host) ? "docker.io" : host;
}
function serverKey(registry) {
  return keyHost(registry) === "docker.io" ? HUB_KEY : registry;
}
async function readConfig(path8) {
  let text;
  try {
    text = await readFile10(path8, "utf8");
  } catch (e) {
    if (e.code === "ENOENT") return {};
    throw new TsbuildError("DOCKER_CONFIG", `cannot read ${path8}: ${e.message}`, { cause: e });
  }
  try {
    const parsed = JSON.parse(text);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed;
  } catch (e) {
    throw new TsbuildError("DOCKER_CONFIG", `${path8} is not valid JSON: ${e.message}`, { cause: e });
  }
}
function helperFor(cfg, registry) {
  const host = keyHost(registry);
  for (const [key, helper] of Object.entries(cfg.credHelpers ?? {})) {
    if (keyHost(key) === host && helper) return helper;
  }
  return cfg.credsStore || void 0;
}
function entryFor(cfg, registry) {
  const host = keyHost(registry);
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (keyHost(key) === host) return entry;
  }
  return void 0;
}
function fromEntry(entry, path8) {
  if (entry.identitytoken) return { identityToken: entry.identitytoken, ...entry.username ? { username: entry.username } : {} };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) throw new TsbuildError("DOCKER_CONFIG", `${path8}: an "auth" value is not base64 of user:password`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry.username && entry.password !== void 0) return { username: entry.username, password: entry.password };
  return void 0;
}
async function runHelper(name, action, input, env) {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new TsbuildError("CREDENTIAL_HELPER", `invalid credential helper name ${JSON.stringify(name)}`);
  const program = `docker-credential-${name}`;
  return new Promise((resolve3, reject) => {
    const child = childProcess6().spawn(program, [action], { env, stdio: ["pipe", "pipe", "pipe"] });
    const out = [];
    const err = [];
    child.stdout.on("data", (b) => out.push(b));
    child.stderr.on("data", (b) => err.push(b));
    child.on("error", (e) => {
      const hint = e.code === "ENOENT" ? `install ${program} or remove it from config.json` : void 0;
      reject(new TsbuildError("CREDENTIAL_HELPER", `cannot run ${program}: ${e.message}`, { cause: e, ...hint ? { hint } : {} }));
    });
    child.on("close", (code) => resolve3({ code: code ?? 1, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") }));
    child.stdin.on("error", () => {
    });
    child.stdin.end(input);
  });
}
async function helperGet(name, registry, env) {
  const r = await runHelper(name, "get", serverKey(registry), env);
  if (r.code !== 0) {
    if (/credentials not found/i.test(r.stdout + r.stderr)) return void 0;
    const why = redactSecrets((r.stderr || r.stdout).trim()).slice(0, 200);
    throw new TsbuildError("CREDENTIAL_HELPER", `docker-credential-${name} get ${registry} failed (exit ${r.code})${why ? `: ${why}` : ""}`);
  }
  let parsed;
  try {
    parsed = JSON.parse(r.stdout);
  } catch {
    throw new TsbuildError("CREDENTIAL_HELPER", `docker-credential-${name} get ${registry} printed something that is not JSON`);
  }
  const user = typeof parsed.Username === "string" ? parsed.Username : "";
  const secret = typeof parsed.Secret === "string" ? parsed.Secret : "";
  if (!secret) return void 0;
  if (user === "<token>") return { identityToken: secret };
  return { username: user, password: secret };
}
function dockerConfigCredentials(opts = {}) {
  return async (registry) => {
    const path8 = dockerConfigPath(opts);
    const cfg = await readConfig(path8);
    const env = opts.env ?? process.env;
    const helper = helperFor(cfg, registry);
    if (helper !== void 0) {
      const got = await helperGet(helper, registry, env);
      if (got !== void 0) return got;
    }
    const entry = entryFor(cfg, registry);
    return entry === void 0 ? void 0 : fromEntry(entry, path8);
  };
}

// packages/registry/src/http.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var http = () => process.getBuiltinModule("node:http");
var https = () => process.getBuiltinModule("node:https");
var CONNECTION_ERRORS = /* @__PURE__ */ new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EAI_AGAIN", "UND_ERR_SOCKET", "ERR_STREAM_PREMATURE_CLOSE"]);
function connectionError(err, what, url) {
  const code = err?.code;
  const msg = err instanceof Error ? err.message : String(err);
  if (code === "ECONNREFUSED") {
    return new RegistryError(`${what}: cannot connect to ${url.host}: connection refused (is the registry running?)`, { cause: err, temporary: false });
  }
  if (code === "ENOTFOUND") {
    return new RegistryError(`${what}: cannot resolve host ${url.hostname}`, { cause: err, temporary: false });
  }
  if (typeof code === "string" && /^(?:CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_TLS)/.test(code)) {
    return new RegistryError(`${what}: TLS verification of ${url.host} failed: ${msg}`, {
      cause: err,
      hint: "pass the registry CA with --ca-file, or mark the registry insecure to use plain HTTP"
    });
  }
  if (url.protocol === "https:" && /wrong version number|packet length too long|http request/i.test(msg)) {
    return new RegistryError(`${what}: ${url.host} does not speak HTTPS (it looks like a plain-HTTP registry)`, {
      cause: err,
      temporary: false,
      hint: `to use it over plain HTTP, pass --insecure-registry ${url.host} (the insecure-registry input of the Action)`
    });
  }
  const temporary = typeof code === "string" && CONNECTION_ERRORS.has(code) || /socket hang up|stalled|aborted|premature/i.test(msg);
  return new RegistryError(`${what}: connection to ${url.host} failed: ${msg}`, { cause: err, temporary });
}
var Transport = class {
  httpAgent;
  httpsAgent;
  timeoutMs;
  userAgent;
  ca;
  constructor(opts = {}) {
    this.timeoutMs = opts.timeoutMs ?? 6e4;
    this.userAgent = opts.userAgent ?? "tsbuild";
    this.ca = opts.ca;
  }
  /** The keep-alive agent for one protocol, made on its first request. */
  agent(isHttps) {
    if (!isHttps) return this.httpAgent ??= new (http()).Agent({ keepAlive: true, maxSockets: 8 });
    const ca = this.ca;
    return this.httpsAgent ??= new (https()).Agent({
      keepAlive: true,
      maxSockets: 8,
      ...ca === void 0 ? {} : { ca: [...process.getBuiltinModule("node:tls").rootCertificates, ca] }
    });
  }
  close() {
    this.httpAgent?.destroy();
    this.httpsAgent?.destroy();
  }
  async send(req) {
    const body = req.body === void 0 ? void 0 : await req.body();
    const isHttps = req.url.protocol === "https:";
    const headers = { "user-agent": this.userAgent, ...req.headers };
    if (body instanceof Uint8Array) headers["content-length"] = String(body.byteLength);
    else if (body === void 0 && (req.method === "PUT" || req.method === "POST" || req.method === "PATCH")) headers["content-length"] = "0";
    const res = await sendRequest({
      method: req.method,
      url: req.url,
      headers,
      body,
      signal: req.signal,
      agent: this.agent(isHttps),
      idleTimeoutMs: this.timeoutMs,
      stalled: () => new Error(`connection stalled for ${this.timeoutMs} ms`)
    });
    return wrapResponse(res, req.url);
  }
};
function sendRequest(req) {
  const mod = req.url.protocol === "https:" ? https() : http();
  const body = req.body;
  return new Promise((resolve3, reject) => {
    let settled = false;
    const fail2 = (e) => {
      if (body !== void 0 && !(body instanceof Uint8Array)) body.destroy();
      if (settled) return;
      settled = true;
      reject(e);
    };
    const cr = mod.request(
      req.url,
      { method: req.method, headers: req.headers, agent: req.agent, signal: req.signal },
      (res) => {
        if (settled) {
          res.resume();
          return;
        }
        settled = true;
        resolve3(res);
      }
    );
    cr.setTimeout(req.idleTimeoutMs, () => cr.destroy(req.stalled()));
    cr.on("error", fail2);
    if (body === void 0) cr.end();
    else if (body instanceof Uint8Array) cr.end(body);
    else {
      body.on("error", (e) => cr.destroy(e));
      body.pipe(cr);
    }
  });
}
async function readAtMost(body, limit) {
  const chunks = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    if (n > limit) {
      body.destroy();
      return void 0;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
function wrapResponse(res, url) {
  return {
    status: res.statusCode ?? 0,
    url,
    body: res,
    header(name) {
      const v = res.headers[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    },
    headerAll(name) {
      const v = res.headers[name.toLowerCase()];
      return v === void 0 ? [] : Array.isArray(v) ? v : [v];
    },
    async bytes(limit) {
      const declared = Number(res.headers["content-length"] ?? NaN);
      if (declared > limit) {
        res.destroy();
        throw new RegistryError(`response from ${url.host}${url.pathname} is ${declared} bytes, more than the ${limit} allowed`);
      }
      const bytes = await readAtMost(res, limit);
      if (bytes === void 0) throw new RegistryError(`response from ${url.host}${url.pathname} is larger than the ${limit} bytes allowed`);
      return bytes;
    },
    discard() {
      res.resume();
    }
  };
}
async function responseError(res, what, reference) {
  let ociCode;
  let detail = "";
  try {
    const text = (await res.bytes(64 * 1024)).toString("utf8");
    const parsed = JSON.parse(text);
    const first = parsed.errors?.[0];
    if (first !== void 0) {
      ociCode = typeof first.code === "string" ? first.code : void 0;
      const m = typeof first.message === "string" ? first.message : "";
      detail = `${ociCode ?? "error"}${m ? `: ${m}` : ""}`;
    }
  } catch {
  }
  const status = res.status;
  const temporary = status >= 500 || status === 429 || status === 408;
  let message = `${what}: ${status} ${http().STATUS_CODES[status] ?? ""}`.trimEnd();
  if (detail) message += ` (${detail.slice(0, 300)})`;
  const options = { status, temporary };
  if (ociCode !== void 0) options.ociCode = ociCode;
  if (reference !== void 0) options.reference = reference;
  return new RegistryError(message, options);
}

// packages/registry/src/client.ts
var LOOPBACK = /^(?:localhost|127(?:\.\d+){3}|\[::1\]|::1)(?::\d+)?$/;
var TOKEN_LIMIT = 1024 * 1024;
var DEFAULT_TOKEN_LIFETIME_S = 60;
var REDIRECTS = 5;
var RegistryClient = class {
  transport;
  insecure;
  credentialSource;
  hosts = /* @__PURE__ */ new Map();
  retries;
  retryDelayMs;
  now;
  constructor(opts = {}) {
    let ca;
    if (opts.caFile !== void 0) {
      try {
        ca = readFileSync5(opts.caFile, "utf8");
      } catch (e) {
        throw new UsageError(`cannot read CA file ${opts.caFile}: ${e.message}`, { cause: e });
      }
    }
    this.transport = new Transport({ ca, timeoutMs: opts.timeoutMs, userAgent: opts.userAgent });
    this.insecure = new Set(opts.insecure ?? []);
    this.credentialSource = opts.credentials ?? dockerConfigCredentials();
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    this.now = opts.now ?? Date.now;
  }
  /** Closes pooled connections (a CLI exits faster). */
  close() {
    this.transport.close();
  }
  baseUrl(registry) {
    const host = registryApiHost(registry);
    const plain2 = LOOPBACK.test(host) || this.insecure.has(host) || this.insecure.has(registry);
    return new URL(`${plain2 ? "http" : "https"}://${host}/`);
  }
  state(registry) {
    let s = this.hosts.get(registry);
    if (s === void 0) {
      s = { challenge: void 0, tokens: /* @__PURE__ */ new Map(), credentials: void 0 };
      this.hosts.set(registry, s);
    }
    return s;
  }
  async credentials(registry) {
    const s = this.state(registry);
    if (s.credentials === void 0) s.credentials = await this.credentialSource(registry) ?? null;
    return s.credentials ?? void 0;
  }
  /**
   * Runs `fn` again on temporary failures, waiting 1×, 2×, 4×… the base delay (or the server's
   * Retry-After when it is longer). Used for whole operations such as one blob transfer.
   */
  async retry(what, signal, fn) {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw new CancelledError(`${what}: cancelled`);
      try {
        return await fn(attempt);
      } catch (e) {
        if (signal?.aborted) throw new CancelledError(`${what}: cancelled`, { cause: e });
        if (!(e instanceof RegistryError) || !e.temporary || attempt >= this.retries) throw e;
        const wait = Math.min(this.retryDelayMs * 2 ** attempt, 3e4) * (0.75 + Math.random() * 0.5);
        await sleep2(Math.max(wait, retryAfterMs(e)), void 0, { signal }).catch(() => void 0);
      }
    }
  }
  /**
   * Sends one request with authentication. 5xx/429/connection failures of idempotent requests
   * are retried here; other statuses are returned for the caller to judge.
   */
  async request(registry, req) {
    const once = async () => {
      const res = await this.authorizedSend(registry, req);
      if (res.status >= 500 || res.status === 429) {
        const err = await responseError(res, req.what);
        err.retryAfter = res.header("retry-after");
        throw err;
      }
      return res;
    };
    if (req.idempotent === false) return once();
    return this.retry(req.what, req.signal, once);
  }
  resolve(registry, path8) {
    return /^https?:\/\//i.test(path8) ? new URL(path8) : new URL(path8, this.baseUrl(registry));
  }
  async authorizedSend(registry, req) {
    const scopes = req.scopes ?? [];
    let auth = await this.authorization(registry, scopes, req.signal);
    let res = await this.sendFollowing(registry, req, auth);
    if (res.status !== 401) return res;
    const s = this.state(registry);
    const fresh = parseChallenges(res.headerAll("www-authenticate"))[0];
    const hadAuth = auth !== void 0;
    if (fresh !== void 0) s.challenge = fresh;
    s.tokens.delete(scopeKey(scopes));
    if (!hadAuth && fresh === void 0) return res;
    res.discard();
    if (hadAuth && s.challenge?.scheme === "basic") throw await this.unauthorized(registry, req.what, 401);
    auth = await this.authorization(registry, scopes, req.signal);
    if (auth === void 0) throw await this.unauthorized(registry, req.what, void 0);
    res = await this.sendFollowing(registry, req, auth);
    if (res.status === 401) {
      res.discard();
      throw await this.unauthorized(registry, req.what, 401);
    }
    return res;
  }
  async unauthorized(registry, what, status) {
    const creds = await this.credentials(registry);
    if (creds === void 0) {
      return new RegistryError(`${what}: ${registry} requires authentication and no credentials are configured for it`, {
        status: 401,
        ociCode: "UNAUTHORIZED",
        hint: `run \`tsbuild login ${registry}\``
      });
    }
    return new RegistryError(`${what}: ${registry} refused the credentials${status ? ` (${status} Unauthorized)` : ""}`, {
      status: 401,
      ociCode: "UNAUTHORIZED",
      hint: `check the user name and password for ${registry} (\`tsbuild login ${registry}\`)`
    });
  }
  async sendFollowing(registry, req, auth) {
    let url = this.resolve(registry, req.path);
    const origin = this.baseUrl(registry).origin;
    for (let hop = 0; ; hop++) {
      const headers = { ...req.headers };
      if (auth !== void 0 && url.origin === origin) headers["authorization"] = auth;
      let res;
      try {
        res = await this.transport.send({ method: req.method, url, headers, body: req.body, signal: req.signal });
      } catch (e) {
        if (req.signal?.aborted) throw new CancelledError(`${req.what}: cancelled`, { cause: e });
        throw connectionError(e, req.what, url);
      }
      const location = res.header("location");
      const redirect = [301, 302, 303, 307, 308].includes(res.status) && location !== void 0;
      if (!redirect || req.method !== "GET" && req.method !== "HEAD") return res;
      res.discard();
      if (hop >= REDIRECTS) throw new RegistryError(`${req.what}: too many redirects from ${url.host}`);
      url = new URL(location, url);
    }
  }
  /** Finds out once per registry which authentication it wants (`GET /v2/`). */
  async challenge(registry, signal) {
    const s = this.state(registry);
    if (s.challenge !== void 0) return s.challenge;
    const what = `contact registry ${registry}`;
    const res = await this.retry(what, signal, async () => {
      const r = await this.sendFollowing(registry, { method: "GET", path: "/v2/", what, signal }, void 0);
      if (r.status >= 500 || r.status === 429) throw await responseError(r, what);
      return r;
    });
    res.discard();
    if (res.status === 401) {
      const all = parseChallenges(res.headerAll("www-authenticate"));
      s.challenge = all.find((c) => c.scheme === "bearer") ?? all.find((c) => c.scheme === "basic") ?? all[0] ?? null;
      if (s.challenge === null) throw new RegistryError(`${what}: 401 without a WWW-Authenticate challenge`, { status: 401 });
    } else if (res.status >= 200 && res.status < 300) {
      s.challenge = null;
    } else if (res.status === 404) {
      throw new RegistryError(`${what}: ${registry} does not serve the registry API (GET /v2/ answered 404)`, { status: 404 });
    } else {
      s.challenge = null;
    }
    return s.challenge;
  }
  async authorization(registry, scopes, signal) {
    const ch = await this.challenge(registry, signal);
    if (ch === null) return void 0;
    if (ch.scheme === "basic") {
      const c = await this.credentials(registry);
      if (c === void 0) return void 0;
      if (!("password" in c)) throw new UsageError(`${registry} uses Basic authentication, which cannot use an identity token`);
      return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
    }
    if (ch.scheme === "bearer") return `Bearer ${await this.token(registry, ch, scopes, signal)}`;
    throw new RegistryError(`${registry} asks for unsupported authentication scheme "${ch.scheme}"`, { status: 401 });
  }
  async token(registry, ch, scopes, signal) {
    const s = this.state(registry);
    const key = scopeKey(scopes);
    const cached = s.tokens.get(key);
    if (cached !== void 0) {
      const t = await cached.catch(() => void 0);
      if (t !== void 0 && t.expiresAt > this.now()) return t.token;
      if (s.tokens.get(key) !== cached) return this.token(registry, ch, scopes, signal);
    }
    const pending = this.fetchToken(registry, ch, scopes, signal);
    s.tokens.set(key, pending);
    try {
      return (await pending).token;
    } catch (e) {
      if (s.tokens.get(key) === pending) s.tokens.delete(key);
      throw e;
    }
  }
  async fetchToken(registry, ch, scopes, signal) {
    const realm = ch.params["realm"];
    const what = `get a token for ${registry}`;
    if (!realm) throw new RegistryError(`${what}: the Bearer challenge names no realm`);
    let url;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`${what}: the realm ${JSON.stringify(realm.slice(0, 200))} is not a URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") throw new RegistryError(`${what}: the realm must be an http(s) URL`);
    const creds = await this.credentials(registry);
    const service = ch.params["service"];
    const started = this.now();
    const res = await this.retry(what, signal, async () => {
      let r;
      try {
        if (creds !== void 0 && "identityToken" in creds) {
          const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: creds.identityToken, client_id: "tsbuild" });
          if (service) form.set("service", service);
          if (scopes.length > 0) form.set("scope", scopes.join(" "));
          const body = Buffer.from(form.toString());
          r = await this.transport.send({ method: "POST", url, headers: { "content-type": "application/x-www-form-urlencoded" }, body: () => body, signal });
        } else {
          const u = new URL(url);
          if (service) u.searchParams.set("service", service);
          for (const sc of scopes) u.searchParams.append("scope", sc);
          const headers = {};
          if (creds !== void 0) {
            u.searchParams.set("account", creds.username);
            headers["authorization"] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
          }
          r = await this.transport.send({ method: "GET", url: u, headers, signal });
        }
      } catch (e) {
        throw connectionError(e, what, url);
      }
      if (r.status >= 500 || r.status === 429) throw await responseError(r, what);
      return r;
    });
    if (res.status === 401 || res.status === 403) {
      res.discard();
      throw new RegistryError(`${what}: the token server ${url.host} refused ${creds ? "the credentials" : "anonymous access"} (${res.status})`, {
        status: res.status,
        ociCode: "UNAUTHORIZED",
        hint: creds ? `check the credentials for ${registry}` : `run \`tsbuild login ${registry}\``
      });
    }
    if (res.status !== 200) throw await responseError(res, what);
    let parsed;
    try {
      parsed = JSON.parse((await res.bytes(TOKEN_LIMIT)).toString("utf8"));
    } catch (e) {
      if (e instanceof TsbuildError) throw e;
      throw new RegistryError(`${what}: the token server answered something that is not JSON`);
    }
    const token = typeof parsed.token === "string" && parsed.token ? parsed.token : typeof parsed.access_token === "string" ? parsed.access_token : "";
    if (!token) throw new RegistryError(`${what}: the token server's answer has no token`);
    const lifetime = typeof parsed.expires_in === "number" && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const margin = Math.min(10, lifetime / 10);
    return { token, expiresAt: started + (lifetime - margin) * 1e3 };
  }
  /**
   * Checks credentials against a registry without storing them: the registry (or its token
   * server) must accept them. Used by `login`.
   */
  async verifyCredentials(registry, signal) {
    const ch = await this.challenge(registry, signal);
    if (ch === null) return;
    const what = `log in to ${registry}`;
    if (ch.scheme === "bearer") {
      this.state(registry).tokens.clear();
      await this.token(registry, ch, [], signal);
      return;
    }
    const res = await this.request(registry, { method: "GET", path: "/v2/", what, signal });
    res.discard();
    if (res.status === 401) throw await this.unauthorized(registry, what, 401);
    if (res.status < 200 || res.status >= 300) throw await responseError(res, what);
  }
};
function scopeKey(scopes) {
  return [...scopes].sort().join(" ");
}
function retryAfterMs(e) {
  const v = e.retryAfter;
  if (v === void 0) return 0;
  const secs = Number(v);
  if (Number.isFinite(secs)) return Math.min(secs * 1e3, 3e4);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.min(Math.max(at - Date.now(), 0), 3e4) : 0;
}
function pullScope(repository) {
  return `repository:${repository}:pull`;
}
function pushScope(repository) {
  return `repository:${repository}:pull,push`;
}

// packages/registry/src/login.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/registry/src/pull.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash7 } from "node:crypto";
import { pipeline as pipeline4 } from "node:stream/promises";

// packages/registry/src/verify.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash6 } from "node:crypto";
import { Transform as Transform4 } from "node:stream";
var DigestVerifier = class extends Transform4 {
  constructor(expected, what, opts = {}) {
    super();
    this.expected = expected;
    this.what = what;
    this.hash = opts.hash === false ? void 0 : createHash6("sha256");
  }
  expected;
  what;
  hash;
  seen = 0;
  get bytesSeen() {
    return this.seen;
  }
  _transform(chunk, _enc, cb) {
    this.seen += chunk.length;
    if (this.seen > this.expected.size) {
      cb(new RegistryError(`${this.what}: blob ${this.expected.digest} is larger than its descriptor's ${this.expected.size} bytes`));
      return;
    }
    this.hash?.update(chunk);
    cb(null, chunk);
  }
  _flush(cb) {
    if (this.seen !== this.expected.size) {
      cb(new RegistryError(`${this.what}: blob ${this.expected.digest} ended after ${this.seen} of ${this.expected.size} bytes`, { temporary: true }));
      return;
    }
    if (this.hash === void 0) {
      cb();
      return;
    }
    const got = `sha256:${this.hash.digest("hex")}`;
    if (got !== this.expected.digest) {
      cb(new RegistryError(`${this.what}: the registry served content for ${this.expected.digest} that hashes to ${got}; refusing it`));
      return;
    }
    cb();
  }
};
function verifyBytes(bytes, expected, what) {
  if (bytes.byteLength !== expected.size) {
    throw new RegistryError(`${what}: ${expected.digest} is ${bytes.byteLength} bytes, its descriptor says ${expected.size}`);
  }
  const got = `sha256:${createHash6("sha256").update(bytes).digest("hex")}`;
  if (got !== expected.digest) throw new RegistryError(`${what}: the registry served content for ${expected.digest} that hashes to ${got}; refusing it`);
}
function checkDescriptor(d, where, what) {
  const o = d;
  if (o === null || typeof o !== "object") throw new RegistryError(`${what}: ${where} is not a descriptor`);
  if (typeof o.mediaType !== "string") throw new RegistryError(`${what}: ${where} has no mediaType`);
  if (!isDigest(o.digest)) throw new RegistryError(`${what}: ${where} has an invalid or non-sha256 digest`);
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) throw new RegistryError(`${what}: ${where} has an invalid size`);
  return o;
}
function parseManifestJson(bytes, contentType, what) {
  let json;
  try {
    json = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new RegistryError(`${what}: the manifest is not valid JSON`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new RegistryError(`${what}: the manifest is not a JSON object`);
  const o = json;
  if (o["schemaVersion"] === 1) throw new RegistryError(`${what}: Docker schema 1 manifests are not supported`, { hint: "push the image again with a current client" });
  if (o["schemaVersion"] !== 2) throw new RegistryError(`${what}: unsupported manifest schemaVersion ${JSON.stringify(o["schemaVersion"])}`);
  const ct = contentType?.split(";")[0]?.trim();
  const mediaType = typeof o["mediaType"] === "string" ? o["mediaType"] : ct ?? "";
  if (Array.isArray(o["manifests"])) {
    o["manifests"].forEach((d, i) => checkDescriptor(d, `manifests[${i}]`, what));
    return { mediaType: mediaType || "application/vnd.oci.image.index.v1+json", manifest: o, isIndex: true };
  }
  checkDescriptor(o["config"], "config", what);
  if (!Array.isArray(o["layers"])) throw new RegistryError(`${what}: the manifest has no layers array`);
  o["layers"].forEach((d, i) => checkDescriptor(d, `layers[${i}]`, what));
  return { mediaType: mediaType || "application/vnd.oci.image.manifest.v1+json", manifest: o, isIndex: false };
}

// packages/registry/src/limit.ts
init_define_TSBUILD_NATIVE_VERSIONS();
async function eachLimit(items, limit, fn) {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

// packages/registry/src/pull.ts
var ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(", ");
async function getManifest(client, ref, opts = {}) {
  const what = `get manifest ${ref.toString()}`;
  return client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, {
      method: "GET",
      path: `/v2/${ref.repository}/manifests/${ref.identifier}`,
      headers: { accept: ACCEPT },
      scopes: [pullScope(ref.repository)],
      what,
      signal: opts.signal
    });
    if (res.status === 404) {
      const err = await responseError(res, what, ref.toString());
      throw new RegistryError(`${ref.toString()}: manifest not found (the image or tag does not exist)`, { status: 404, ociCode: err.ociCode ?? "MANIFEST_UNKNOWN", reference: ref.toString() });
    }
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const bytes = await res.bytes(MAX_MANIFEST_SIZE);
    const digest = `sha256:${createHash7("sha256").update(bytes).digest("hex")}`;
    if (ref.digest !== void 0 && digest !== ref.digest) {
      throw new RegistryError(`${what}: the registry served a manifest hashing to ${digest} for ${ref.digest}; refusing it`, { reference: ref.toString() });
    }
    const claimed = res.header("docker-content-digest");
    if (claimed !== void 0 && claimed.startsWith("sha256:") && claimed !== digest) {
      throw new RegistryError(`${what}: the registry says the manifest is ${claimed} but it hashes to ${digest}; refusing it`, { reference: ref.toString() });
    }
    const parsed = parseManifestJson(bytes, res.header("content-type"), what);
    return { descriptor: { mediaType: parsed.mediaType, digest, size: bytes.length }, bytes, manifest: parsed.manifest, isIndex: parsed.isIndex };
  });
}
async function resolveImage(client, ref, opts = {}) {
  const top = await getManifest(client, ref, opts);
  if (!top.isIndex) return { manifestDescriptor: top.descriptor, manifestBytes: top.bytes, manifest: top.manifest, index: void 0 };
  const want = typeof opts.platform === "object" ? opts.platform : parsePlatform(opts.platform ?? "linux/amd64");
  const entries = top.manifest.manifests;
  const pick3 = entries.find((d) => platformMatches(d.platform, want));
  if (pick3 === void 0) {
    const have = entries.map((d) => d.platform).filter((p) => p !== void 0 && p.os !== "unknown").map(formatPlatform);
    throw new RegistryError(`${ref.toString()} has no image for ${formatPlatform(want)}; it has: ${have.length ? have.join(", ") : "no platform-tagged images"}`, {
      reference: ref.toString(),
      hint: "choose one of those with --platform"
    });
  }
  const child = await getManifest(client, withDigest(ref, pick3.digest), opts);
  if (child.isIndex) throw new RegistryError(`${ref.toString()}: nested indexes are not supported (${pick3.digest})`, { reference: ref.toString() });
  if (child.bytes.length !== pick3.size) throw new RegistryError(`${ref.toString()}: manifest ${pick3.digest} is ${child.bytes.length} bytes, the index says ${pick3.size}`);
  return { manifestDescriptor: { ...child.descriptor, mediaType: pick3.mediaType, platform: want }, manifestBytes: child.bytes, manifest: child.manifest, index: top };
}
async function fetchBlobBytes(client, ref, desc, opts = {}) {
  const what = `get blob ${desc.digest} of ${ref.registry}/${ref.repository}`;
  if (desc.size > MAX_JSON_BLOB_SIZE) throw new RegistryError(`${what}: ${desc.size} bytes is too large to read into memory`);
  return client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, { method: "GET", path: `/v2/${ref.repository}/blobs/${desc.digest}`, scopes: [pullScope(ref.repository)], what, signal: opts.signal });
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const bytes = await res.bytes(desc.size);
    verifyBytes(bytes, desc, what);
    return bytes;
  });
}
async function pullBlob(client, ref, desc, sink, opts = {}) {
  const what = `pull blob ${desc.digest} of ${ref.registry}/${ref.repository}`;
  await client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, { method: "GET", path: `/v2/${ref.repository}/blobs/${desc.digest}`, scopes: [pullScope(ref.repository)], what, signal: opts.signal });
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const writer = await sink.write(desc);
    const verifies = writer.verifies === true;
    try {
      await pipeline4(res.body, new DigestVerifier(desc, what, { hash: !verifies }), writer.stream, { signal: opts.signal });
    } catch (e) {
      await writer.abort();
      if (e instanceof RegistryError) throw e;
      throw new RegistryError(`${what}: download interrupted: ${e.message}`, { cause: e, temporary: !opts.signal?.aborted });
    }
    try {
      await writer.commit();
    } catch (e) {
      if (!verifies || !(e instanceof TsbuildError) || e.code !== "DIGEST_MISMATCH") throw e;
      await writer.abort().catch(() => void 0);
      throw new RegistryError(`${what}: the registry served content for ${desc.digest} that does not match it (${e.message}); refusing it`, { cause: e, reference: ref.toString() });
    }
  });
}
async function writeBytes(sink, desc, bytes) {
  if (await sink.has(desc.digest)) return;
  const w = await sink.write(desc);
  try {
    await pipeline4(async function* () {
      yield bytes;
    }, w.stream);
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.commit();
}
async function pullImage(client, ref, sink, opts = {}) {
  const img = await resolveImage(client, ref, opts);
  const configDesc = img.manifest.config;
  const configBytes = await fetchBlobBytes(client, ref, configDesc, opts);
  let config;
  try {
    config = JSON.parse(configBytes.toString("utf8"));
  } catch {
    throw new RegistryError(`${ref.toString()}: config ${configDesc.digest} is not valid JSON`);
  }
  const seen = /* @__PURE__ */ new Set([configDesc.digest]);
  const layers = opts.layers === false ? [] : img.manifest.layers.filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  for (const d of layers) {
    if (d.urls !== void 0 && d.urls.length > 0) throw new RegistryError(`${ref.toString()}: layer ${d.digest} is a foreign layer (hosted elsewhere), which is not supported`);
  }
  await eachLimit(layers, opts.concurrency ?? 4, async (d) => {
    if (await sink.has(d.digest)) {
      opts.onBlob?.({ descriptor: d, status: "exists" });
      return;
    }
    await pullBlob(client, ref, d, sink, opts);
    opts.onBlob?.({ descriptor: d, status: "done" });
  });
  await writeBytes(sink, configDesc, configBytes);
  await writeBytes(sink, img.manifestDescriptor, img.manifestBytes);
  return { manifestDescriptor: img.manifestDescriptor, manifest: img.manifest, manifestBytes: img.manifestBytes, config };
}

// packages/registry/src/push.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash8 } from "node:crypto";
import { PassThrough as PassThrough2, Writable as Writable3 } from "node:stream";
import { setTimeout as sleep3 } from "node:timers/promises";
var OCTET = "application/octet-stream";
var ChunkReader = class {
  constructor(stream) {
    this.stream = stream;
    this.it = stream[Symbol.asyncIterator]();
  }
  stream;
  it;
  pending = Buffer.alloc(0);
  done = false;
  async read(n) {
    const parts = [];
    let have = 0;
    while (have < n) {
      if (this.pending.length === 0) {
        if (this.done) break;
        const r = await this.it.next();
        if (r.done) {
          this.done = true;
          break;
        }
        this.pending = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      }
      const take = this.pending.subarray(0, n - have);
      this.pending = this.pending.subarray(take.length);
      parts.push(take);
      have += take.length;
    }
    return Buffer.concat(parts);
  }
  close() {
    this.stream.destroy();
  }
};
var BlobPusher = class {
  constructor(client, ref, source, opts) {
    this.client = client;
    this.ref = ref;
    this.source = source;
    this.opts = opts;
  }
  client;
  ref;
  source;
  opts;
  get repo() {
    return this.ref.repository;
  }
  async call(method, path8, what, extra = {}) {
    return this.client.request(this.ref.registry, {
      method,
      path: path8,
      what,
      signal: this.opts.signal,
      scopes: extra.scopes ?? [pushScope(this.repo)],
      ...extra.headers ? { headers: extra.headers } : {},
      ...extra.body ? { body: extra.body } : {},
      ...extra.idempotent === void 0 ? {} : { idempotent: extra.idempotent }
    });
  }
  async exists(desc) {
    const what = `check blob ${desc.digest} in ${this.ref.registry}/${this.repo}`;
    const res = await this.call("HEAD", `/v2/${this.repo}/blobs/${desc.digest}`, what);
    res.discard();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await responseError(res, what, this.ref.toString());
  }
  /** Starts an upload session, or mounts the blob from `from`; returns the upload URL or 'mounted'. */
  async start(desc, from) {
    const what = `start upload of ${desc.digest} to ${this.ref.registry}/${this.repo}`;
    let path8 = `/v2/${this.repo}/blobs/uploads/`;
    const scopes = [pushScope(this.repo)];
    const mounting = from !== void 0 && from !== this.repo;
    if (mounting) {
      path8 += `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`;
      scopes.push(pullScope(from));
    }
    const res = await this.call("POST", path8, what, { scopes });
    res.discard();
    if (res.status === 201 && mounting) return "mounted";
    if (res.status !== 202) throw await responseError(res, what, this.ref.toString());
    const location = res.header("location");
    if (!location) throw new RegistryError(`${what}: the registry gave no upload location`);
    const min = Number(res.header("oci-chunk-min-length") ?? 0);
    return { location: absoluteUrl(location, res.url), minChunk: Number.isSafeInteger(min) && min > 0 ? min : 0 };
  }
  async push(desc) {
    if (await this.exists(desc)) return "exists";
    const from = typeof this.opts.mountFrom === "function" ? this.opts.mountFrom(desc) : this.opts.mountFrom;
    const monolithicMax = this.opts.monolithicMax ?? 16 * 1024 * 1024;
    const what = `push blob ${desc.digest} to ${this.ref.registry}/${this.repo}`;
    let mountTried = false;
    return this.client.retry(what, this.opts.signal, async () => {
      const session = await this.start(desc, mountTried ? void 0 : from);
      mountTried = true;
      if (session === "mounted") return "mounted";
      if (desc.size <= monolithicMax) await this.monolithic(desc, session.location, what);
      else await this.chunked(desc, session, what);
      return "uploaded";
    });
  }
  async monolithic(desc, location, what) {
    const res = await this.call("PUT", withDigestParam(location, desc.digest), what, {
      headers: { "content-type": OCTET, "content-length": String(desc.size) },
      body: () => this.source.openBlob(desc),
      idempotent: false
    });
    await this.finish(res, desc, what);
  }
  finish(res, desc, what) {
    return finishUpload(res, desc, what, this.ref.toString());
  }
  /** Where the registry says an upload stands: the next offset it expects, or undefined when the session is gone. */
  async uploadedUpTo(location, what) {
    const res = await this.call("GET", location, `${what} (upload status)`);
    res.discard();
    if (res.status === 404) return void 0;
    if (res.status !== 204 && res.status !== 200) throw await responseError(res, what, this.ref.toString());
    const next = res.header("location");
    return { offset: rangeEnd(res.header("range")), location: next ? absoluteUrl(next, res.url) : location };
  }
  async chunked(desc, session, what) {
    const chunkSize = Math.max(this.opts.chunkSize ?? 8 * 1024 * 1024, session.minChunk);
    let location = session.location;
    let reader = new ChunkReader(await this.source.openBlob(desc));
    let readerAt = 0;
    let offset = 0;
    let chunk = Buffer.alloc(0);
    let chunkStart = 0;
    const hash = createHash8("sha256");
    let hashed = 0;
    let failures = 0;
    try {
      while (offset < desc.size) {
        if (offset < chunkStart || offset >= chunkStart + chunk.length) {
          if (offset !== readerAt) {
            reader.close();
            reader = new ChunkReader(await this.source.openBlob(desc));
            readerAt = 0;
            while (readerAt < offset) {
              const skipped = await reader.read(Math.min(chunkSize, offset - readerAt));
              if (skipped.length === 0) throw new RegistryError(`${what}: the local blob ended after ${readerAt} of ${desc.size} bytes`);
              readerAt += skipped.length;
            }
          }
          chunkStart = offset;
          chunk = await reader.read(Math.min(chunkSize, desc.size - offset));
          readerAt += chunk.length;
          if (chunk.length === 0) throw new RegistryError(`${what}: the local blob ended after ${offset} of ${desc.size} bytes`);
          if (chunkStart <= hashed && chunkStart + chunk.length > hashed) {
            hash.update(chunk.subarray(hashed - chunkStart));
            hashed = chunkStart + chunk.length;
          }
        }
        const body = chunk.subarray(offset - chunkStart);
        try {
          const res2 = await this.call("PATCH", location, what, {
            headers: { "content-type": OCTET, "content-range": `${offset}-${offset + body.length - 1}` },
            body: () => body,
            idempotent: false
          });
          if (res2.status !== 202) throw await responseError(res2, what, this.ref.toString());
          res2.discard();
          const next = res2.header("location");
          if (next) location = absoluteUrl(next, res2.url);
          const range = res2.header("range");
          offset = range === void 0 ? offset + body.length : rangeEnd(range);
          failures = 0;
          continue;
        } catch (e) {
          if (!(e instanceof RegistryError) || !e.temporary && e.status !== 416 || failures >= this.client.retries) throw e;
          await backoff(this.client.retryDelayMs, failures++, this.opts.signal);
          const status = await this.uploadedUpTo(location, what);
          if (status === void 0) throw e;
          if (status.offset > chunkStart + chunk.length) throw new RegistryError(`${what}: the registry claims ${status.offset} bytes, more than were sent`);
          location = status.location;
          offset = status.offset;
        }
      }
    } finally {
      reader.close();
    }
    if (hashed === desc.size && `sha256:${hash.digest("hex")}` !== desc.digest) {
      throw new RegistryError(`${what}: the local content does not match ${desc.digest}; not committing the upload`);
    }
    const res = await this.call("PUT", withDigestParam(location, desc.digest), what, { idempotent: false });
    await this.finish(res, desc, what);
  }
};
var StreamedUpload = class {
  constructor(client, ref, signal, location, what) {
    this.client = client;
    this.ref = ref;
    this.signal = signal;
    this.what = what;
    const body = this.body;
    body.on("error", () => void 0);
    this.stream = new Writable3({
      highWaterMark: 1 << 20,
      write: (chunk, _enc, cb) => {
        if (this.failure !== void 0 || body.destroyed || body.write(chunk)) {
          cb();
          return;
        }
        const go = () => {
          body.off("drain", go);
          body.off("close", go);
          cb();
        };
        body.on("drain", go);
        body.on("close", go);
      },
      final: (cb) => {
        if (!body.destroyed) body.end();
        cb();
      },
      destroy: (err, cb) => {
        if (!body.writableEnded) this.cancel(err ?? new RegistryError(`${this.what}: cancelled`));
        cb(null);
      }
    });
    let taken = false;
    this.sent = (async () => {
      const res = await this.request("PATCH", location, {
        headers: { "content-type": OCTET },
        body: () => {
          if (taken) throw new RegistryError(`${what}: a streamed upload cannot be sent twice`);
          if (this.failure !== void 0) throw this.failure;
          taken = true;
          return body;
        },
        idempotent: false
      });
      if (res.status !== 202) throw await responseError(res, what, ref.toString());
      res.discard();
      const next = res.header("location");
      return { location: next ? absoluteUrl(next, res.url) : location, received: res.header("range") };
    })();
    this.sent.catch((e) => this.cancel(e instanceof Error ? e : new Error(String(e))));
  }
  client;
  ref;
  signal;
  what;
  stream;
  body = new PassThrough2({ highWaterMark: 1 << 20 });
  failure;
  sent;
  cancel(reason) {
    this.failure ??= reason ?? new RegistryError(`${this.what}: cancelled`);
    if (!this.body.destroyed) this.body.destroy(this.failure);
  }
  async commit(blob) {
    const { location, received } = await this.sent;
    if (this.failure !== void 0) throw this.failure;
    if (received !== void 0) {
      const got = rangeEnd(received);
      if (got !== blob.size && !(got === 0 && blob.size <= 1)) {
        throw new RegistryError(`${this.what}: the registry received ${got} of ${blob.size} bytes`, { temporary: true });
      }
    }
    const res = await this.request("PUT", withDigestParam(location, blob.digest), { idempotent: false });
    await finishUpload(res, blob, this.what, this.ref.toString());
  }
  request(method, path8, extra) {
    return this.client.request(this.ref.registry, {
      method,
      path: path8,
      what: this.what,
      signal: this.signal,
      scopes: [pushScope(this.ref.repository)],
      idempotent: extra.idempotent,
      ...extra.headers ? { headers: extra.headers } : {},
      ...extra.body ? { body: extra.body } : {}
    });
  }
};
function absoluteUrl(location, base) {
  return new URL(location, base).toString();
}
function withDigestParam(location, digest) {
  const u = new URL(location);
  u.searchParams.set("digest", digest);
  return u.toString();
}
async function finishUpload(res, desc, what, reference) {
  if (res.status === 201 || res.status === 204) {
    res.discard();
    const got = res.header("docker-content-digest");
    if (got !== void 0 && got !== desc.digest) throw new RegistryError(`${what}: the registry stored it as ${got}`);
    return;
  }
  const err = await responseError(res, what, reference);
  if (err.ociCode === "DIGEST_INVALID" || err.ociCode === "SIZE_INVALID") {
    throw new RegistryError(`${what}: the registry refused the content: it does not match ${desc.digest} (${desc.size} bytes)`, { status: err.status, ociCode: err.ociCode, reference });
  }
  throw err;
}
async function backoff(base, attempt, signal) {
  await sleep3(Math.min(base * 2 ** attempt, 3e4), void 0, { signal });
}
function rangeEnd(range) {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(range?.trim() ?? "");
  if (m === null) return 0;
  const end = Number(m[1]);
  return end === 0 ? 0 : end + 1;
}
async function pushBlob(client, ref, desc, source, opts = {}) {
  return new BlobPusher(client, ref, source, opts).push(desc);
}
async function startBlobUpload(client, ref, opts = {}) {
  const what = `push blob to ${ref.registry}/${ref.repository}`;
  const res = await client.request(ref.registry, {
    method: "POST",
    path: `/v2/${ref.repository}/blobs/uploads/`,
    what: `start upload to ${ref.registry}/${ref.repository}`,
    signal: opts.signal,
    scopes: [pushScope(ref.repository)]
  });
  res.discard();
  if (res.status !== 202) throw await responseError(res, what, ref.toString());
  const location = res.header("location");
  if (!location) throw new RegistryError(`${what}: the registry gave no upload location`);
  return new StreamedUpload(client, ref, opts.signal, absoluteUrl(location, res.url), what);
}
async function pushManifest(client, ref, bytes, mediaType, opts = {}) {
  const digest = `sha256:${createHash8("sha256").update(bytes).digest("hex")}`;
  if (ref.tag === void 0 && ref.digest !== void 0 && ref.digest !== digest) {
    throw new UsageError(`cannot push to ${ref.toString()}: the manifest's digest is ${digest}`);
  }
  const what = `push manifest to ${ref.toString()}`;
  const res = await client.request(ref.registry, {
    method: "PUT",
    path: `/v2/${ref.repository}/manifests/${ref.tag ?? digest}`,
    headers: { "content-type": mediaType },
    body: () => bytes,
    scopes: [pushScope(ref.repository)],
    what,
    signal: opts.signal
  });
  if (res.status !== 201 && res.status !== 200 && res.status !== 202) throw await responseError(res, what, ref.toString());
  res.discard();
  const got = res.header("docker-content-digest");
  if (got !== void 0 && got.startsWith("sha256:") && got !== digest) throw new RegistryError(`${what}: the registry stored the manifest as ${got}, expected ${digest}`);
  return digest;
}
async function pushImage(client, ref, source, opts = {}) {
  const { bytes, mediaType } = await source.manifest();
  const parsed = parseManifestJson(bytes, mediaType, `push ${ref.toString()}`);
  if (parsed.isIndex) throw new UsageError(`cannot push ${ref.toString()}: pushing an image index is not supported, push each platform's manifest`);
  const manifest = parsed.manifest;
  const seen = /* @__PURE__ */ new Set();
  const blobs = [manifest.config, ...manifest.layers].filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  const pusher = new BlobPusher(client, ref, source, opts);
  await eachLimit(blobs, opts.concurrency ?? 3, async (d) => {
    const status = await pusher.push(d);
    opts.onBlob?.({ descriptor: d, status });
  });
  const digest = await pushManifest(client, ref, bytes, mediaType, opts);
  return { digest, descriptor: { mediaType, digest, size: bytes.byteLength } };
}

// packages/registry/src/convert.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var TO_DOCKER = {
  [MediaType.OciManifest]: MediaType.DockerManifest,
  [MediaType.OciConfig]: MediaType.DockerConfig,
  [MediaType.OciLayer]: MediaType.DockerLayer,
  [MediaType.OciLayerGzip]: MediaType.DockerLayerGzip
};
var TO_OCI = Object.fromEntries(Object.entries(TO_DOCKER).map(([oci, docker]) => [docker, oci]));
TO_OCI[MediaType.DockerForeignLayerGzip] = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
function mapType(type, table, format2, what) {
  const mapped = table[type];
  if (mapped !== void 0) return mapped;
  if (Object.values(table).includes(type)) return type;
  if (format2 === "docker" && type === MediaType.OciLayerZstd) {
    throw new UsageError(`${what}: zstd layers have no Docker media type`, { hint: "push with --format oci, or compress with gzip" });
  }
  throw new UsageError(`${what}: media type ${type} has no ${format2} equivalent`);
}
function convertDescriptor(d, table, format2, what) {
  const out = { mediaType: mapType(d.mediaType, table, format2, what), digest: d.digest, size: d.size };
  if (d.urls !== void 0) out.urls = d.urls;
  if (format2 === "oci" && d.annotations !== void 0) out.annotations = d.annotations;
  return out;
}
function convertManifest(manifest, format2) {
  const table = format2 === "docker" ? TO_DOCKER : TO_OCI;
  const what = `convert manifest to ${format2}`;
  const out = {
    schemaVersion: 2,
    mediaType: format2 === "docker" ? MediaType.DockerManifest : MediaType.OciManifest,
    config: convertDescriptor(manifest.config, table, format2, what),
    layers: manifest.layers.map((l) => convertDescriptor(l, table, format2, what))
  };
  if (format2 === "oci" && manifest.annotations !== void 0) out.annotations = manifest.annotations;
  return out;
}

// packages/registry/src/adapters.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function storeSink(store) {
  return {
    has: (d) => store.hasBlob(d),
    write: (desc) => {
      const w = store.blobWriter();
      return {
        stream: w.stream,
        commit: async () => {
          await w.commit({ digest: desc.digest, size: desc.size });
        },
        abort: () => w.abort(),
        verifies: true
      };
    }
  };
}

// packages/cache/src/gha-blob.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { Readable as Readable5, Transform as Transform5, pipeline as pipeline5 } from "node:stream";
import { setTimeout as sleep5 } from "node:timers/promises";

// packages/cache/src/gha-error.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var GhaCacheError = class extends TsbuildError {
  operation;
  status;
  url;
  serviceCode;
  temporary;
  retryAfterMs;
  constructor(message, options = {}) {
    super("GHA_CACHE", redactText(message), {
      ...options.hint === void 0 ? {} : { hint: options.hint },
      ...options.cause === void 0 ? {} : { cause: options.cause }
    });
    this.operation = options.operation;
    this.status = options.status;
    this.url = options.url;
    this.serviceCode = options.serviceCode;
    this.temporary = options.temporary ?? false;
    this.retryAfterMs = options.retryAfterMs;
  }
};
function redactUrl(url) {
  const u = typeof url === "string" ? safeUrl(url) : url;
  if (u === void 0) return "[unparseable URL]";
  return `${u.protocol}//${u.host}${u.pathname}${u.search === "" ? "" : "?[redacted]"}`;
}
function safeUrl(text) {
  try {
    return new URL(text);
  } catch {
    return void 0;
  }
}
function redactText(text) {
  return redactSecrets(text).replace(/https?:\/\/[^\s"'<>?]+\?(?!\[redacted\])[^\s"'<>]*/gi, (m) => redactUrl(m)).replace(/\bsig=[^&\s"'<>]+/gi, "sig=[redacted]");
}
function errorFields(e) {
  return {
    operation: e.operation,
    status: e.status,
    url: e.url,
    serviceCode: e.serviceCode,
    ...e.hint === void 0 ? {} : { hint: e.hint },
    cause: e.cause ?? e
  };
}
function cancelled2(signal, what) {
  const reason = signal?.reason;
  return new CancelledError(`gha cache: ${what} cancelled`, reason === void 0 ? {} : { cause: reason });
}

// packages/cache/src/gha-http.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { setTimeout as sleep4 } from "node:timers/promises";
var CONNECTION_CODES = /* @__PURE__ */ new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH", "ERR_STREAM_PREMATURE_CLOSE"]);
var IdleTimeout = class extends Error {
  constructor(ms) {
    super(`no data moved for ${ms} ms`);
  }
};
function randomJitter(ms) {
  return ms / 2 + Math.random() * (ms / 2);
}
function parseRetryAfter(value) {
  if (value === void 0) return void 0;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1e3;
  const at = Date.parse(v);
  return Number.isNaN(at) ? void 0 : Math.max(0, at - Date.now());
}
function retryableStatus(status) {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}
function firstHeader(res, name) {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
var GhaHttp = class {
  maxAttempts;
  onRetry;
  retryBaseMs;
  retryMaxMs;
  maxRetryAfterMs;
  userAgent;
  httpAgent = new (process.getBuiltinModule("node:http")).Agent({ keepAlive: true, maxSockets: 16 });
  httpsAgent = new (process.getBuiltinModule("node:https")).Agent({ keepAlive: true, maxSockets: 16 });
  constructor(options) {
    this.maxAttempts = options.maxAttempts;
    this.retryBaseMs = options.retryBaseMs;
    this.retryMaxMs = options.retryMaxMs;
    this.maxRetryAfterMs = options.maxRetryAfterMs;
    this.userAgent = options.userAgent;
    this.onRetry = options.onRetry;
  }
  /** Drops the kept-alive connections. */
  close() {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
  send(req) {
    return sendRequest({
      method: req.method,
      url: req.url,
      headers: { "user-agent": this.userAgent, ...req.headers },
      body: req.body,
      signal: req.signal,
      agent: req.url.protocol === "https:" ? this.httpsAgent : this.httpAgent,
      // The socket's idle timer also covers the response body, so a stalled download breaks too.
      idleTimeoutMs: req.idleTimeoutMs,
      stalled: () => new IdleTimeout(req.idleTimeoutMs)
    });
  }
  /** Turns a failure to get an answer into a GhaCacheError saying whether retrying may help. */
  connectionError(err, operation, url, signal) {
    if (err instanceof GhaCacheError || err instanceof CancelledError) return err;
    if (signal?.aborted) return cancelled2(signal, operation);
    const code = err?.code;
    const msg = err instanceof Error ? err.message : String(err);
    const where = `${operation} ${redactUrl(url)}`;
    if (err instanceof IdleTimeout || err instanceof Error && err.name === "TimeoutError") {
      return new GhaCacheError(`gha cache: ${where}: timed out (${msg})`, { operation, url: redactUrl(url), temporary: true, cause: err });
    }
    if (code === "ECONNREFUSED" || code === "ENOTFOUND") {
      return new GhaCacheError(`gha cache: ${where}: cannot connect to ${url.host} (${String(code)})`, {
        operation,
        url: redactUrl(url),
        cause: err,
        hint: "a self-hosted runner must reach the GitHub Actions endpoints (results-receiver.actions.githubusercontent.com and *.blob.core.windows.net)"
      });
    }
    const temporary = typeof code === "string" && CONNECTION_CODES.has(code) || /socket hang up|aborted|premature|reset/i.test(msg);
    return new GhaCacheError(`gha cache: ${where}: connection failed: ${msg}`, { operation, url: redactUrl(url), temporary, cause: err });
  }
  retryDelay(attempt, retryAfterMs2) {
    const backoff2 = randomJitter(Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempt - 1)));
    if (retryAfterMs2 === void 0) return backoff2;
    return Math.max(retryAfterMs2 + Math.random() * Math.min(1e3, retryAfterMs2 * 0.1), backoff2);
  }
  /** Runs `attempt` until it succeeds, fails for good, or the attempts are used up. */
  async withRetries(operation, signal, attemptFn) {
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw cancelled2(signal, operation);
      let error;
      try {
        return await attemptFn(attempt);
      } catch (e) {
        if (signal?.aborted) throw cancelled2(signal, operation);
        if (!(e instanceof GhaCacheError) || !e.temporary) throw e;
        error = e;
      }
      if (error.retryAfterMs !== void 0 && error.retryAfterMs > this.maxRetryAfterMs) {
        throw new GhaCacheError(
          `${error.message}; the service asks to wait ${Math.ceil(error.retryAfterMs / 1e3)} s before retrying, longer than the ${Math.ceil(this.maxRetryAfterMs / 1e3)} s tsbuild waits`,
          { ...errorFields(error), temporary: false, hint: "GitHub limits new cache entries to 200 a minute per repository; fewer, larger entries stay under it" }
        );
      }
      if (attempt >= this.maxAttempts) {
        throw new GhaCacheError(`${error.message} (gave up after ${attempt} attempt${attempt === 1 ? "" : "s"})`, {
          ...errorFields(error),
          temporary: false,
          ...error.status === 429 ? { hint: "GitHub limits new cache entries to 200 a minute per repository" } : {}
        });
      }
      const delayMs = this.retryDelay(attempt, error.retryAfterMs);
      this.onRetry?.({ operation, attempt, maxAttempts: this.maxAttempts, delayMs, status: error.status, reason: error.message });
      try {
        await sleep4(delayMs, void 0, { signal });
      } catch {
        throw cancelled2(signal, operation);
      }
    }
  }
};

// packages/cache/src/gha-blob.ts
var AZURE_VERSION = "2023-11-03";
var AZURE_MAX_BLOCKS = 5e4;
var AZURE_MAX_BLOCK = 4e3 * 1024 * 1024;
var AZURE_MAX_PUT_BLOB = 5e3 * 1024 * 1024;
var MIB = 1024 * 1024;
function sizeChecked(expected) {
  let seen = 0;
  return new Transform5({
    transform(chunk, _enc, cb) {
      seen += chunk.length;
      if (seen > expected) cb(new GhaCacheError(`the body to upload is longer than the ${expected} bytes declared`));
      else cb(null, chunk);
    },
    flush(cb) {
      if (seen !== expected) cb(new GhaCacheError(`the body to upload ended after ${seen} of the ${expected} bytes declared`));
      else cb();
    }
  });
}
async function* blocksOf(body, size) {
  let parts = [];
  let have = 0;
  for await (const piece of body) {
    let chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
    while (chunk.length > 0) {
      const take = Math.min(size - have, chunk.length);
      parts.push(chunk.subarray(0, take));
      have += take;
      chunk = chunk.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}
function withQuery(url, extra) {
  const u = new URL(url.href);
  u.search = u.search === "" ? `?${extra}` : `${u.search}&${extra}`;
  return u;
}
var AzureBlobClient = class {
  constructor(http2, options) {
    this.http = http2;
    this.idleTimeoutMs = options.idleTimeoutMs;
    this.blockSize = Math.min(AZURE_MAX_BLOCK, Math.max(1, Math.floor(options.blockSize ?? 8 * MIB)));
    this.singleShotMax = Math.min(AZURE_MAX_PUT_BLOB, Math.max(0, Math.floor(options.singleShotMaxBytes ?? this.blockSize)));
    this.concurrency = Math.max(1, Math.floor(options.uploadConcurrency ?? 2));
  }
  http;
  idleTimeoutMs;
  blockSize;
  singleShotMax;
  concurrency;
  /** Uploads exactly `size` bytes to a signed upload URL: in one Put Blob when small, else in blocks. */
  async upload(url, size, openBody, signal) {
    if (size <= this.singleShotMax) await this.putBlob(url, size, openBody, signal);
    else await this.putBlocks(url, size, openBody, signal);
  }
  async blobError(operation, url, res) {
    const status = res.statusCode ?? 0;
    let code = firstHeader(res, "x-ms-error-code");
    try {
      const body = await readAtMost(res, 16 * 1024);
      if (code === void 0 && body !== void 0) code = /<Code>([^<]{1,100})<\/Code>/.exec(body.toString("utf8"))?.[1];
    } catch {
    }
    const temporary = retryableStatus(status);
    let message = `gha cache: ${operation} ${redactUrl(url)}: ${status} ${process.getBuiltinModule("node:http").STATUS_CODES[status] ?? ""}`.trimEnd();
    if (code !== void 0) message += ` (${code})`;
    const hint = status === 403 ? "the signed blob URL was refused (it may have expired)" : void 0;
    return new GhaCacheError(message, {
      operation,
      status,
      url: redactUrl(url),
      serviceCode: code,
      temporary,
      retryAfterMs: parseRetryAfter(firstHeader(res, "retry-after")),
      ...hint === void 0 ? {} : { hint }
    });
  }
  blobHeaders(extra) {
    return { "x-ms-version": AZURE_VERSION, ...extra };
  }
  async expectCreated(operation, url, res) {
    if (res.statusCode === 201) {
      res.resume();
      return;
    }
    throw await this.blobError(operation, url, res);
  }
  /** One PUT that Azure must answer 201 Created, retried whole; `body` gives the body afresh for each attempt. */
  async put(operation, url, headers, body, signal) {
    await this.http.withRetries(operation, signal, async () => {
      let res;
      try {
        res = await this.http.send({ method: "PUT", url, headers: this.blobHeaders(headers), body: await body(), signal, idleTimeoutMs: this.idleTimeoutMs });
      } catch (e) {
        throw this.http.connectionError(e, operation, url, signal);
      }
      await this.expectCreated(operation, url, res);
    });
  }
  async putBlob(url, size, openBody, signal) {
    const headers = { "x-ms-blob-type": "BlockBlob", "content-type": "application/octet-stream", "content-length": String(size) };
    await this.put("PutBlob", url, headers, async () => pipeline5(await openBody(), sizeChecked(size), () => void 0), signal);
  }
  async putBlocks(url, size, openBody, signal) {
    const blockSize = Math.max(this.blockSize, Math.ceil(size / AZURE_MAX_BLOCKS));
    const inner = new AbortController();
    const linked = signal === void 0 ? inner.signal : AbortSignal.any([signal, inner.signal]);
    const ids = [];
    const inflight = /* @__PURE__ */ new Set();
    let failure;
    let total = 0;
    const body = await openBody();
    try {
      for await (const block of blocksOf(body, blockSize)) {
        if (failure !== void 0 || linked.aborted) break;
        total += block.length;
        if (total > size) throw new GhaCacheError(`the body to upload is longer than the ${size} bytes declared`);
        const id = Buffer.from(`tsbuild-block-${String(ids.length).padStart(6, "0")}`).toString("base64");
        ids.push(id);
        const p = this.putBlock(url, id, block, linked).catch((e) => {
          failure ??= e;
          inner.abort();
        }).finally(() => inflight.delete(p));
        inflight.add(p);
        while (inflight.size >= this.concurrency) await Promise.race(inflight);
      }
    } catch (e) {
      failure ??= e;
      inner.abort();
    } finally {
      await Promise.all(inflight);
      body.destroy();
    }
    if (signal?.aborted) throw cancelled2(signal, "upload");
    if (failure !== void 0) throw failure;
    if (total !== size) throw new GhaCacheError(`the body to upload ended after ${total} of the ${size} bytes declared`);
    const xml = Buffer.from(`<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`);
    const listUrl = withQuery(url, "comp=blocklist");
    const headers = { "content-type": "application/xml", "content-length": String(xml.length), "x-ms-blob-content-type": "application/octet-stream" };
    await this.put("PutBlockList", listUrl, headers, () => xml, signal);
  }
  async putBlock(url, id, block, signal) {
    const blockUrl = withQuery(url, `comp=block&blockid=${encodeURIComponent(id)}`);
    const headers = { "content-type": "application/octet-stream", "content-length": String(block.length) };
    await this.put("PutBlock", blockUrl, headers, () => block, signal);
  }
  /** One Get Blob from `offset`, checked to be the part asked for. */
  async getBlob(url, offset, expectedTotal, signal) {
    let res;
    try {
      res = await this.http.send({
        method: "GET",
        url,
        headers: this.blobHeaders(offset > 0 ? { range: `bytes=${offset}-` } : {}),
        signal,
        idleTimeoutMs: this.idleTimeoutMs
      });
    } catch (e) {
      throw this.http.connectionError(e, "GetBlob", url, signal);
    }
    const status = res.statusCode ?? 0;
    if (status !== 200 && status !== 206) throw await this.blobError("GetBlob", url, res);
    let total;
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(firstHeader(res, "content-range") ?? "");
      if (m === null || Number(m[1]) !== offset) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: answered a range other than the one asked for`, { operation: "GetBlob", url: redactUrl(url), status });
      }
      total = Number(m[3]);
    } else {
      if (offset > 0) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: ignored the Range of a resumed download`, { operation: "GetBlob", url: redactUrl(url), status });
      }
      total = Number(firstHeader(res, "content-length") ?? NaN);
      if (!Number.isSafeInteger(total) || total < 0) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: answered without a Content-Length`, { operation: "GetBlob", url: redactUrl(url), status });
      }
    }
    if (expectedTotal !== void 0 && total !== expectedTotal) {
      res.destroy();
      throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: the blob changed size while it was being downloaded`, { operation: "GetBlob", url: redactUrl(url), status });
    }
    return { res, total };
  }
  /**
   * Streams a blob from a signed download URL. `refresh` gets a fresh URL once when Azure refuses
   * this one (it expires); a broken response is resumed where it stopped.
   */
  async download(initial, refresh, signal) {
    let url = initial;
    let refreshed = false;
    const open6 = async (offset, total2) => this.http.withRetries("GetBlob", signal, async () => {
      try {
        return await this.getBlob(url, offset, total2, signal);
      } catch (e) {
        if (e instanceof GhaCacheError && e.status === 403 && !refreshed) {
          refreshed = true;
          url = await refresh();
          return this.getBlob(url, offset, total2, signal);
        }
        throw e;
      }
    });
    const first = await open6(0, void 0);
    const total = first.total;
    const self2 = this;
    async function* chunks() {
      let res = first.res;
      let offset = 0;
      let breaks = 0;
      for (; ; ) {
        try {
          for await (const chunk of res) {
            offset += chunk.length;
            if (offset > total) throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: sent more than the ${total} bytes it declared`, { operation: "GetBlob", url: redactUrl(url) });
            breaks = 0;
            yield chunk;
          }
          if (offset === total) return;
          throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: the download ended after ${offset} of ${total} bytes`, { operation: "GetBlob", url: redactUrl(url), temporary: true });
        } catch (e) {
          res.destroy();
          const err = self2.http.connectionError(e, "GetBlob", url, signal);
          if (!(err instanceof GhaCacheError) || !err.temporary) throw err;
          breaks++;
          if (breaks >= self2.http.maxAttempts) throw new GhaCacheError(`${err.message} (the download broke ${breaks} times in a row at byte ${offset})`, { ...errorFields(err), temporary: false });
          const delayMs = self2.http.retryDelay(breaks, void 0);
          self2.http.onRetry?.({ operation: "GetBlob", attempt: breaks, maxAttempts: self2.http.maxAttempts, delayMs, status: void 0, reason: err.message });
          try {
            await sleep5(delayMs, void 0, { signal });
          } catch {
            throw cancelled2(signal, "download");
          }
          res = (await open6(offset, total)).res;
        }
      }
    }
    const stream = Readable5.from(chunks(), { objectMode: false });
    if (signal !== void 0) {
      const onAbort = () => {
        stream.destroy(cancelled2(signal, "download"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      stream.once("close", () => signal.removeEventListener("abort", onAbort));
    }
    return stream;
  }
};

// packages/cache/src/gha-env.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var RUNNER_STEP_HINT = "the runner gives ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL only to JavaScript (and container) action steps, not to `run:` steps: run tsbuild through its action, or expose them to the step first (for example with crazy-max/ghaction-github-runtime)";
function envFlag(value) {
  if (value === void 0 || value.trim() === "") return void 0;
  return /^(?:1|t|true|y|yes|on)$/i.test(value.trim());
}
function isGhes(serverUrl) {
  if (serverUrl === void 0 || serverUrl.trim() === "") return void 0;
  const host = safeUrl(serverUrl.trim())?.hostname.toLowerCase();
  if (host === void 0) return void 0;
  if (host === "github.com" || host.endsWith(".ghe.com") || host.endsWith(".localhost")) return void 0;
  return host;
}
function readGhaEnv(env) {
  const token = env.ACTIONS_RUNTIME_TOKEN?.trim() ?? "";
  const resultsUrl = env.ACTIONS_RESULTS_URL?.trim() ?? "";
  const cacheUrl = env.ACTIONS_CACHE_URL?.trim() ?? "";
  const v2 = envFlag(env.ACTIONS_CACHE_SERVICE_V2);
  const ghes = isGhes(env.GITHUB_SERVER_URL);
  if (ghes !== void 0 && v2 !== true) {
    return {
      ok: false,
      missing: false,
      error: new UsageError(`the gha cache needs GitHub's v2 cache service, and GitHub Enterprise Server (${ghes}) offers only the v1 service`, {
        hint: "use --cache-to/--cache-from type=registry or type=local on GitHub Enterprise Server"
      })
    };
  }
  if (v2 === false || v2 === void 0 && resultsUrl === "" && cacheUrl !== "") {
    return {
      ok: false,
      missing: false,
      error: new UsageError(
        (v2 === false ? `ACTIONS_CACHE_SERVICE_V2=${env.ACTIONS_CACHE_SERVICE_V2 ?? ""} puts this job on the v1 cache service` : "the gha cache found only the v1 cache service (ACTIONS_CACHE_URL, without ACTIONS_RESULTS_URL)") + "; GitHub retired the v1 service on github.com in 2025, and tsbuild speaks only v2 (ACTIONS_RESULTS_URL)",
        { hint: "run on a current GitHub-hosted or self-hosted runner, which sets ACTIONS_CACHE_SERVICE_V2 and ACTIONS_RESULTS_URL for action steps" }
      )
    };
  }
  const missing = [resultsUrl === "" ? "ACTIONS_RESULTS_URL" : "", token === "" ? "ACTIONS_RUNTIME_TOKEN" : ""].filter((s) => s !== "");
  if (missing.length > 0) {
    return {
      ok: false,
      missing: true,
      error: new UsageError(`the gha cache needs ${missing.join(" and ")}, which ${missing.length === 1 ? "is" : "are"} not set`, { hint: RUNNER_STEP_HINT })
    };
  }
  const parsed = safeUrl(resultsUrl);
  if (parsed === void 0 || parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    return { ok: false, missing: false, error: new UsageError(`ACTIONS_RESULTS_URL is not an http(s) URL: ${redactUrl(resultsUrl)}`) };
  }
  return { ok: true, resultsUrl, token };
}

// packages/cache/src/gha.ts
var GHA_CACHE_MAX_KEY_LENGTH = 512;
var GHA_CACHE_MAX_KEYS = 10;
function ghaCacheVersion(label2 = "tsbuild-cache-v1") {
  return createHash9("sha256").update(`tsbuild|${label2}`).digest("hex");
}
var GHA_CACHE_VERSION = ghaCacheVersion();
var SERVICE = "github.actions.results.api.v1.CacheService";
function asRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? value : void 0;
}
function str(value) {
  return typeof value === "string" ? value : "";
}
function validateKeys(keys) {
  if (keys.length > GHA_CACHE_MAX_KEYS) {
    throw new UsageError(`a gha cache lookup takes at most ${GHA_CACHE_MAX_KEYS} keys (the key and its restore keys), got ${keys.length}`);
  }
  for (const key of keys) {
    const shown3 = key.length > 80 ? `${key.slice(0, 77)}...` : key;
    if (key === "") throw new UsageError("a gha cache key must not be empty");
    if (key.length > GHA_CACHE_MAX_KEY_LENGTH) {
      throw new UsageError(`gha cache key "${shown3}" is ${key.length} characters long; the service takes at most ${GHA_CACHE_MAX_KEY_LENGTH}`, {
        hint: "shorten the cache scope"
      });
    }
    if (key.includes(",")) throw new UsageError(`gha cache key "${shown3}" contains a comma, which the cache service does not allow`, { hint: "remove commas from the cache scope" });
  }
}
var GhaCacheClient = class _GhaCacheClient {
  version;
  base;
  token;
  timeoutMs;
  http;
  blobs;
  constructor(options) {
    const base = typeof options.resultsUrl === "string" ? safeUrl(options.resultsUrl) : new URL(options.resultsUrl.href);
    if (base === void 0 || base.protocol !== "https:" && base.protocol !== "http:") {
      throw new UsageError(`the gha cache URL is not an http(s) URL: ${redactUrl(String(options.resultsUrl))}`);
    }
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    base.search = "";
    base.hash = "";
    if (options.token.trim() === "") throw new UsageError("the gha cache needs a runtime token (ACTIONS_RUNTIME_TOKEN)", { hint: RUNNER_STEP_HINT });
    this.base = base;
    this.token = options.token.trim();
    this.version = options.version ?? GHA_CACHE_VERSION;
    this.timeoutMs = options.timeoutMs ?? 3e4;
    this.http = new GhaHttp({
      maxAttempts: Math.max(1, Math.floor(options.maxAttempts ?? 5)),
      retryBaseMs: options.retryBaseMs ?? 1e3,
      retryMaxMs: options.retryMaxMs ?? 3e4,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 12e4,
      userAgent: options.userAgent ?? "tsbuild",
      onRetry: options.onRetry
    });
    this.blobs = new AzureBlobClient(this.http, {
      idleTimeoutMs: options.idleTimeoutMs ?? 6e4,
      blockSize: options.blockSize,
      singleShotMaxBytes: options.singleShotMaxBytes,
      uploadConcurrency: options.uploadConcurrency
    });
  }
  /**
   * A client for the service the runner describes in `env`; throws a UsageError that names what is
   * missing or wrong (no token, a `run:` step, only the retired v1 service, GitHub Enterprise Server).
   */
  static fromEnv(env = process.env, options = {}) {
    const r = readGhaEnv(env);
    if (!r.ok) throw r.error;
    return new _GhaCacheClient({ ...options, resultsUrl: r.resultsUrl, token: r.token });
  }
  /** Like fromEnv, but undefined when the variables are simply absent (not in an action step). */
  static tryFromEnv(env = process.env, options = {}) {
    const r = readGhaEnv(env);
    if (!r.ok) {
      if (r.missing) return void 0;
      throw r.error;
    }
    return new _GhaCacheClient({ ...options, resultsUrl: r.resultsUrl, token: r.token });
  }
  /**
   * The ref scopes the runtime token grants (its `ac` claim), as BuildKit reads them to name an
   * index per writable ref. The token is not verified here (the service does that); a token that
   * is not a JWT grants nothing we can see.
   */
  scopes() {
    const payload = this.token.split(".")[1];
    if (payload === void 0) return [];
    try {
      const claims = asRecord(JSON.parse(Buffer.from(payload, "base64url").toString("utf8")));
      const ac = typeof claims?.ac === "string" ? JSON.parse(claims.ac) : void 0;
      if (!Array.isArray(ac)) return [];
      const out = [];
      for (const item of ac) {
        const rec = asRecord(item);
        const scope = rec?.Scope;
        const perm = rec?.Permission;
        if (typeof scope !== "string" || typeof perm !== "number") continue;
        out.push({ scope, read: (perm & 1) !== 0, write: (perm & 2) !== 0 });
      }
      return out;
    } catch {
      return [];
    }
  }
  /** Drops the kept-alive connections. */
  close() {
    this.http.close();
  }
  /**
   * Finds the entry for `key`, else the newest whose key starts with `key`, else the newest
   * matching each restore key as a prefix, in order. Undefined on a miss.
   */
  async lookup(key, restoreKeys = [], options = {}) {
    validateKeys([key, ...restoreKeys]);
    const found2 = await this.findEntry(key, restoreKeys, options.signal);
    if (found2 === void 0) return void 0;
    const { matchedKey } = found2;
    let url = found2.url;
    return {
      matchedKey,
      exact: matchedKey === key,
      open: async (openOptions = {}) => {
        const signal = openOptions.signal ?? options.signal;
        const refresh = async () => {
          const again = await this.findEntry(matchedKey, [], signal);
          if (again === void 0 || again.matchedKey !== matchedKey) {
            throw new GhaCacheError(`gha cache entry ${matchedKey} disappeared while it was being downloaded`, { operation: "GetCacheEntryDownloadURL" });
          }
          url = again.url;
          return url;
        };
        return this.blobs.download(url, refresh, signal);
      }
    };
  }
  /** True when an entry with exactly this key exists (a prefix match does not count). */
  async has(key, options = {}) {
    validateKeys([key]);
    const found2 = await this.findEntry(key, [], options.signal);
    return found2?.matchedKey === key;
  }
  /**
   * Stores `size` bytes under `key`: reserve, upload, finalize. 'exists' when the key is already
   * taken (saved, or reserved by a save still running elsewhere); nothing is uploaded then.
   */
  async save(key, size, openBody, options = {}) {
    validateKeys([key]);
    if (!Number.isSafeInteger(size) || size < 0) throw new GhaCacheError(`gha cache: invalid body size ${size} for ${key}`);
    const signal = options.signal;
    if (signal?.aborted) throw cancelled2(signal, `saving ${key}`);
    let created;
    try {
      created = await this.twirp("CreateCacheEntry", { key, version: this.version }, signal);
    } catch (e) {
      if (e instanceof GhaCacheError && e.serviceCode === "already_exists") return "exists";
      throw e;
    }
    if (created.ok !== true) {
      const message = str(created.message);
      if (/already exists/i.test(message)) return "exists";
      throw new GhaCacheError(`gha cache: the service refused to create entry ${key}: ${message || "no reason given"}`, { operation: "CreateCacheEntry" });
    }
    const uploadUrl = this.signedUrl(created.signed_upload_url, "CreateCacheEntry", "signed_upload_url");
    await this.blobs.upload(uploadUrl, size, openBody, signal);
    const finalized = await this.twirp("FinalizeCacheEntryUpload", { key, version: this.version, size_bytes: String(size) }, signal, true);
    if (finalized.ok !== true) {
      const message = str(finalized.message);
      throw new GhaCacheError(`gha cache: the service refused to finalize entry ${key}: ${message || "no reason given"}`, { operation: "FinalizeCacheEntryUpload" });
    }
    return "saved";
  }
  async findEntry(key, restoreKeys, signal) {
    const res = await this.twirp("GetCacheEntryDownloadURL", { key, restore_keys: [...restoreKeys], version: this.version }, signal);
    if (res.ok !== true) return void 0;
    const matchedKey = str(res.matched_key);
    if (matchedKey === "" || ![key, ...restoreKeys].some((p) => matchedKey.startsWith(p))) return void 0;
    return { matchedKey, url: this.signedUrl(res.signed_download_url, "GetCacheEntryDownloadURL", "signed_download_url") };
  }
  signedUrl(value, operation, field) {
    const url = typeof value === "string" ? safeUrl(value) : void 0;
    if (url === void 0 || url.protocol !== "https:" && url.protocol !== "http:") {
      throw new GhaCacheError(`gha cache: ${operation} answered ok without a usable ${field}`, { operation });
    }
    return url;
  }
  // ---- Twirp ------------------------------------------------------------------------------------
  async twirp(method, body, signal, conflictAfterRetryIsSuccess = false) {
    const url = new URL(`twirp/${SERVICE}/${method}`, this.base);
    const payload = Buffer.from(JSON.stringify(body));
    return this.http.withRetries(method, signal, async (attempt) => {
      const deadline = AbortSignal.timeout(this.timeoutMs);
      const combined = signal === void 0 ? deadline : AbortSignal.any([signal, deadline]);
      let res;
      let text;
      try {
        res = await this.http.send({
          method: "POST",
          url,
          headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json", accept: "application/json", "content-length": String(payload.length) },
          body: payload,
          signal: combined,
          idleTimeoutMs: this.timeoutMs
        });
        text = await readAtMost(res, 256 * 1024);
      } catch (e) {
        if (!signal?.aborted && deadline.aborted) {
          throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: no answer within ${this.timeoutMs} ms`, { operation: method, url: redactUrl(url), temporary: true, cause: e });
        }
        throw this.http.connectionError(e, method, url, signal);
      }
      const status = res.statusCode ?? 0;
      if (text === void 0) {
        throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: answer larger than 256 KiB`, { operation: method, url: redactUrl(url), status });
      }
      if (status >= 200 && status < 300) {
        let parsed;
        try {
          parsed = asRecord(JSON.parse(text.toString("utf8")));
        } catch {
          parsed = void 0;
        }
        if (parsed === void 0) {
          throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: answered ${status} with a body that is not a JSON object`, { operation: method, url: redactUrl(url), status });
        }
        return parsed;
      }
      const err = this.twirpError(method, url, res, text);
      if (conflictAfterRetryIsSuccess && attempt > 1 && err.serviceCode === "already_exists") {
        return { ok: true };
      }
      throw err;
    });
  }
  twirpError(method, url, res, body) {
    const status = res.statusCode ?? 0;
    let code;
    let msg = "";
    try {
      const parsed = asRecord(JSON.parse(body.toString("utf8")));
      code = typeof parsed?.code === "string" ? parsed.code : void 0;
      msg = (str(parsed?.msg) || str(parsed?.message)).split(this.token).join("[redacted]");
    } catch {
    }
    if (code === void 0 && status === 409) code = "already_exists";
    const retryAfterMs2 = status === 429 ? parseRetryAfter(firstHeader(res, "retry-after")) : void 0;
    const temporary = retryableStatus(status);
    const detail = [code, msg.slice(0, 300)].filter((s) => s !== void 0 && s !== "").join(": ");
    let message = `gha cache: ${method} ${redactUrl(url)}: ${status} ${process.getBuiltinModule("node:http").STATUS_CODES[status] ?? ""}`.trimEnd();
    if (detail !== "") message += ` (${detail})`;
    let hint;
    if (status === 401 || status === 403) {
      hint = "the cache service refused ACTIONS_RUNTIME_TOKEN: it is valid only for the job that received it and only while that job runs";
    } else if (status === 429) {
      hint = "GitHub limits new cache entries to 200 a minute per repository";
    } else if (/insufficient usage/i.test(msg)) {
      hint = "the repository's cache storage quota is used up";
    }
    return new GhaCacheError(message, {
      operation: method,
      status,
      url: redactUrl(url),
      serviceCode: code,
      temporary,
      retryAfterMs: retryAfterMs2,
      ...hint === void 0 ? {} : { hint }
    });
  }
};

// packages/cache/src/spec.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function fields(flag, spec) {
  const out = /* @__PURE__ */ new Map();
  if (!spec.includes("=")) return /* @__PURE__ */ new Map([["type", "registry"], ["ref", spec]]);
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new UsageError(`${flag} ${spec}: expected KEY=VALUE pairs, got ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim().toLowerCase();
    if (out.has(key)) throw new UsageError(`${flag} ${spec}: ${key}= given twice`);
    out.set(key, part.slice(eq + 1).trim());
  }
  return out;
}
function required(flag, spec, f, key) {
  const v = f.get(key);
  if (v === void 0 || v === "") throw new UsageError(`${flag} ${spec}: type=${f.get("type")} needs ${key}=`);
  return v;
}
function unknownKeys(flag, spec, f, allowed) {
  for (const k of f.keys()) {
    if (!allowed.includes(k)) throw new UsageError(`${flag} ${spec}: unknown option ${k}=`, { hint: `type=${f.get("type")} takes ${allowed.filter((a) => a !== "type").join(", ")}` });
  }
}
function bool(flag, spec, v) {
  if (v === void 0 || v === "" || v === "false") return false;
  if (v === "true") return true;
  throw new UsageError(`${flag} ${spec}: expected true or false, got ${JSON.stringify(v)}`);
}
function parseSize(what, v) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new UsageError(`${what}: invalid size ${JSON.stringify(v)}: expected a number with an optional unit (k, m, g), e.g. 512m`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[(m[2] ?? "").toLowerCase()];
  return Math.floor(Number(m[1]) * mult);
}
function defaultScope(env) {
  return env.GITHUB_REF_NAME || "buildkit";
}
function parseCacheFrom(spec, env = process.env) {
  const flag = "--cache-from";
  const f = fields(flag, spec);
  const type = f.get("type") ?? "registry";
  switch (type) {
    case "registry":
      unknownKeys(flag, spec, f, ["type", "ref"]);
      return { type, ref: required(flag, spec, f, "ref") };
    case "local":
      unknownKeys(flag, spec, f, ["type", "src", "tag", "digest"]);
      return { type, src: required(flag, spec, f, "src"), tag: f.get("tag") || "latest" };
    case "gha":
      unknownKeys(flag, spec, f, ["type", "scope", "url", "token", "version"]);
      return { type, scope: f.get("scope") || defaultScope(env) };
    default:
      throw new UsageError(`${flag} ${spec}: unknown cache type ${JSON.stringify(type)}`, { hint: "one of registry, local, gha" });
  }
}
function parseCacheTo(spec, env = process.env) {
  const flag = "--cache-to";
  const f = fields(flag, spec);
  const type = f.get("type") ?? "registry";
  const common = ["type", "mode", "compression", "ignore-error", "mounts", "mounts-max-size"];
  const mode = f.get("mode") || "min";
  if (mode !== "min" && mode !== "max") throw new UsageError(`${flag} ${spec}: mode must be min or max, got ${JSON.stringify(mode)}`);
  const compression = f.get("compression") || "gzip";
  if (compression !== "gzip" && compression !== "zstd") throw new UsageError(`${flag} ${spec}: compression must be gzip or zstd, got ${JSON.stringify(compression)}`);
  const maxSize = f.get("mounts-max-size");
  const opts = {
    mode,
    compression,
    ignoreError: bool(flag, spec, f.get("ignore-error")),
    mounts: bool(flag, spec, f.get("mounts")),
    mountsMaxSize: maxSize !== void 0 && maxSize !== "" ? parseSize(`${flag} mounts-max-size`, maxSize) : void 0
  };
  switch (type) {
    case "registry":
      unknownKeys(flag, spec, f, [...common, "ref", "oci-mediatypes", "image-manifest"]);
      return { type, ref: required(flag, spec, f, "ref"), ...opts };
    case "local":
      unknownKeys(flag, spec, f, [...common, "dest", "tag"]);
      return { type, dest: required(flag, spec, f, "dest"), tag: f.get("tag") || "latest", ...opts };
    case "inline":
      unknownKeys(flag, spec, f, common);
      if (opts.mode === "max") throw new UsageError(`${flag} ${spec}: type=inline only supports mode=min`, { hint: "use type=registry,ref=\u2026,mode=max for every stage" });
      if (opts.mounts) throw new UsageError(`${flag} ${spec}: type=inline cannot carry cache mounts`, { hint: "use type=registry or type=local with mounts=true" });
      return { type, ...opts };
    case "gha":
      unknownKeys(flag, spec, f, [...common, "scope", "url", "token", "version"]);
      return { type, scope: f.get("scope") || defaultScope(env), ...opts };
    default:
      throw new UsageError(`${flag} ${spec}: unknown cache type ${JSON.stringify(type)}`, { hint: "one of registry, local, inline, gha" });
  }
}
function describeCache(c) {
  switch (c.type) {
    case "registry":
      return `registry ${c.ref}`;
    case "local":
      return `local ${"src" in c ? c.src : c.dest}`;
    case "inline":
      return "inline";
    case "gha":
      return `gha scope ${c.scope}`;
  }
}

// packages/cache/src/format.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var CACHE_ARTIFACT_TYPE = "application/vnd.tsbuild.cache.v1";
var CACHE_CONFIG_MEDIA_TYPE = "application/vnd.tsbuild.cache.config.v1+json";
var INLINE_ANNOTATION = "dev.tsbuild.cache.v1";
var MAX_CACHE_DOCUMENT = 16 * 1024 * 1024;
var MAX_RECORDS = 1e5;
function bad3(where, what) {
  return new TsbuildError("BAD_CACHE", `${where}: ${what}`, { hint: "the cache is ignored where it does not parse; export it again with --cache-to" });
}
var KEY_RE = /^[0-9a-f]{64}$/;
function descriptorOf(v) {
  if (v === null || typeof v !== "object") return void 0;
  const d = v;
  if (typeof d.mediaType !== "string" || !isDigest(d.digest) || !Number.isSafeInteger(d.size) || d.size < 0) return void 0;
  if (![MediaType.OciLayer, MediaType.OciLayerGzip, MediaType.OciLayerZstd, MediaType.DockerLayer, MediaType.DockerLayerGzip].includes(d.mediaType)) return void 0;
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}
function layerOf(v) {
  if (v === null || typeof v !== "object") return void 0;
  const l = v;
  const blob = descriptorOf(l.blob);
  if (!isDigest(l.diffId) || !Number.isSafeInteger(l.size) || l.size < 0 || !blob) return void 0;
  return { diffId: l.diffId, size: l.size, blob };
}
function parseCacheDocument(bytes, where) {
  if (bytes.length > MAX_CACHE_DOCUMENT) throw bad3(where, `the cache document is ${bytes.length} bytes, more than the ${MAX_CACHE_DOCUMENT} allowed`);
  let raw;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw bad3(where, `the cache document is not JSON: ${e.message}`);
  }
  return documentFrom(raw, where);
}
function documentFrom(raw, where) {
  if (raw === null || typeof raw !== "object") throw bad3(where, "the cache document is not a JSON object");
  const doc = raw;
  if (doc.tsbuildCache !== 1) throw bad3(where, `unsupported cache format ${JSON.stringify(doc.tsbuildCache)}`);
  const records = [];
  const rawRecords = Array.isArray(doc.records) ? doc.records.slice(0, MAX_RECORDS) : [];
  for (const r of rawRecords) {
    if (r === null || typeof r !== "object") continue;
    const e = r;
    if (typeof e.key !== "string" || !KEY_RE.test(e.key) || typeof e.created !== "string" || Number.isNaN(Date.parse(e.created))) continue;
    if (e.parent !== void 0 && (typeof e.parent !== "string" || e.parent.length > 200)) continue;
    const entry = { key: e.key, parent: e.parent, created: e.created };
    if (e.layer !== void 0) {
      const layer = layerOf(e.layer);
      if (!layer) continue;
      entry.layer = layer;
    }
    if (e.history !== null && typeof e.history === "object") entry.history = e.history;
    if (e.config !== null && typeof e.config === "object" && !Array.isArray(e.config)) entry.config = e.config;
    records.push(entry);
  }
  const mounts = [];
  for (const m of Array.isArray(doc.mounts) ? doc.mounts.slice(0, 1e3) : []) {
    if (m === null || typeof m !== "object") continue;
    const e = m;
    const layer = layerOf(e.layer);
    if (typeof e.name !== "string" || !/^[0-9a-f]{32}$/.test(e.name) || typeof e.id !== "string" || !layer) continue;
    mounts.push({ name: e.name, id: e.id.slice(0, 4096), layer });
  }
  return { tsbuildCache: 1, records, mounts };
}
function serializeCacheDocument(doc) {
  const records = [...doc.records].sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  const mounts = [...doc.mounts].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return Buffer.from(JSON.stringify({ tsbuildCache: 1, records, mounts }));
}
function documentBlobs(doc) {
  const seen = /* @__PURE__ */ new Map();
  for (const l of [...doc.records.map((r) => r.layer), ...doc.mounts.map((m) => m.layer)]) {
    if (l && !seen.has(l.blob.digest)) seen.set(l.blob.digest, l.blob);
  }
  return [...seen.values()].sort((a, b) => a.digest < b.digest ? -1 : 1);
}

// packages/cache/src/origins.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var NS = "blob-origins";
var KEEP = 8;
function encode(o) {
  switch (o.kind) {
    case "registry":
      return o.repo;
    case "oci-layout":
      return `oci-layout:${o.dir}`;
    case "gha":
      return "gha:";
  }
}
function decode(s) {
  if (s.startsWith("oci-layout:")) return { kind: "oci-layout", dir: s.slice("oci-layout:".length) };
  if (s === "gha:") return { kind: "gha" };
  return { kind: "registry", repo: s };
}
function known(v) {
  if (Array.isArray(v)) return { size: void 0, at: v.filter((x) => typeof x === "string") };
  if (v !== null && typeof v === "object") {
    const o = v;
    const size = Number.isSafeInteger(o.size) && o.size >= 0 ? o.size : void 0;
    return { size, at: Array.isArray(o.at) ? o.at.filter((x) => typeof x === "string") : [] };
  }
  return { size: void 0, at: [] };
}
async function recordOrigins(store, blobs, origin) {
  const meta = store.meta(NS, { durable: false });
  const value = encode(origin);
  const seen = /* @__PURE__ */ new Set();
  for (const b of blobs) {
    if (seen.has(b.digest)) continue;
    seen.add(b.digest);
    await meta.update(b.digest, (old) => {
      const k = known(old);
      if (k.at.includes(value) && k.size === b.size) return old;
      return { size: b.size, at: [...k.at.filter((x) => x !== value), value].slice(-KEEP) };
    });
  }
}
async function originsOf(store, digest) {
  const k = known(await store.meta(NS, { durable: false }).get(digest));
  return { size: k.size, origins: k.at.map(decode) };
}
async function mountSource(store, digest, registry, exclude) {
  const same = (await originsOf(store, digest)).origins.filter(
    (o) => o.kind === "registry" && o.repo.startsWith(`${registry}/`) && o.repo !== `${registry}/${exclude}`
  );
  return same.at(-1)?.repo.slice(registry.length + 1);
}

// packages/cache/src/fetcher.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createReadStream } from "node:fs";
import { join as join14 } from "node:path";
import { pipeline as pipeline6 } from "node:stream/promises";
var CacheMismatchError = class extends TsbuildError {
  constructor(diffId, blob, got) {
    super("CACHE_MISMATCH", `cached layer ${blob} does not unpack to the diff_id ${diffId} the cache recorded (it is ${got})`, {
      hint: "the cache entry is ignored and the step runs again"
    });
    this.diffId = diffId;
    this.blob = blob;
  }
  diffId;
  blob;
};
function ghaBlobKey(digest) {
  return `tsbuild-blob-${digestHex(digest)}`;
}
var ALGOS = ["gzip", "zstd"];
var RemoteFetcher = class {
  constructor(store, opts = {}) {
    this.store = store;
    this.opts = opts;
  }
  store;
  opts;
  async knows(digest) {
    const store = this.store;
    if ((await originsOf(store, digest)).origins.length > 0) return true;
    for (const algo of ALGOS) if (await store.compressedVariant(digest, algo)) return true;
    return false;
  }
  async fetch(digest, opts) {
    const store = this.store;
    const known2 = await originsOf(store, digest);
    const errors = [];
    if (known2.size !== void 0) {
      for (const o of [...known2.origins].reverse()) {
        try {
          await this.download(store, o, digest, known2.size, opts.signal);
          return true;
        } catch (e) {
          if (opts.signal?.aborted || e instanceof TsbuildError && e.code === "DIGEST_MISMATCH") throw e;
          errors.push(`${describe(o)}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
    for (const algo of ALGOS) {
      const variant = await store.compressedVariant(digest, algo);
      if (!variant) continue;
      if (!await store.ensureBlob(variant.digest, opts)) continue;
      await this.unpack(store, digest, variant.digest, opts.signal);
      return true;
    }
    if (errors.length > 0) throw new TsbuildError("BLOB_FETCH", `blob ${digest} could not be fetched: ${errors.join("; ")}`);
    return false;
  }
  /** Makes the uncompressed layer `diffId` from its compressed blob, checking the content against it. */
  async unpack(store, diffId, blob, signal) {
    const w = store.blobWriter();
    try {
      await pipeline6(decompress(await store.openBlob(blob, { signal })), w.stream, { signal });
      const got = await w.commit();
      if (got.digest !== diffId) {
        throw new CacheMismatchError(diffId, blob, got.digest);
      }
    } catch (e) {
      await w.abort().catch(() => {
      });
      throw e;
    }
  }
  async download(store, o, digest, size, signal) {
    switch (o.kind) {
      case "registry": {
        const client = new RegistryClient(this.opts.registry ?? {});
        try {
          await pullBlob(client, parseReference(o.repo), { mediaType: "application/octet-stream", digest, size }, storeSink(store), { signal });
        } finally {
          client.close();
        }
        return;
      }
      case "oci-layout":
        await store.writeBlob(createReadStream(join14(o.dir, "blobs", "sha256", digestHex(digest))), { digest, size }, { signal });
        return;
      case "gha": {
        const gha = this.opts.gha;
        if (!gha) throw new TsbuildError("GHA_UNAVAILABLE", "it is in GitHub's Actions cache, which only the tsbuild Action can read");
        const entry = await gha.lookup(ghaBlobKey(digest), [], { signal });
        if (!entry?.exact) throw new TsbuildError("BLOB_NOT_FOUND", "not in the GitHub cache any more");
        await store.writeBlob(await entry.open({ signal }), { digest, size }, { signal });
        return;
      }
    }
  }
};
function describe(o) {
  switch (o.kind) {
    case "registry":
      return o.repo;
    case "oci-layout":
      return `cache directory ${o.dir}`;
    case "gha":
      return "GitHub cache";
  }
}

// packages/cache/src/backends.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { mkdir as mkdir8, readFile as readFile11, rename as rename5, rm as rm9, stat as stat5, writeFile as writeFile6 } from "node:fs/promises";
import { join as join15, resolve as resolvePath6 } from "node:path";
import { Readable as Readable6 } from "node:stream";
import { pipeline as pipeline7 } from "node:stream/promises";
import { createWriteStream } from "node:fs";
async function loadRegistry(refText, ctx) {
  const ref = parseReference(refText);
  const client = new RegistryClient(ctx.registry);
  try {
    let m;
    try {
      m = await getManifest(client, ref, { signal: ctx.signal });
    } catch (e) {
      if (e instanceof TsbuildError && "status" in e && e.status === 404) return void 0;
      throw e;
    }
    const where = `cache ${refText}`;
    if (m.isIndex) throw new TsbuildError("BAD_CACHE", `${where} is an image index, not a tsbuild cache`, { hint: "caches written by other builders cannot be read" });
    const manifest = m.manifest;
    const origin = { kind: "registry", repo: `${ref.registry}/${ref.repository}` };
    if (manifest.config.mediaType === CACHE_CONFIG_MEDIA_TYPE) {
      if (manifest.config.size > MAX_CACHE_DOCUMENT) throw new TsbuildError("BAD_CACHE", `${where}: the cache document is ${manifest.config.size} bytes, too large`);
      const bytes = await fetchBlobBytes(client, ref, manifest.config, { signal: ctx.signal });
      return { doc: parseCacheDocument(bytes, where), origin };
    }
    const inline = manifest.annotations?.[INLINE_ANNOTATION];
    if (inline !== void 0) {
      let raw;
      try {
        raw = JSON.parse(inline);
      } catch (e) {
        throw new TsbuildError("BAD_CACHE", `${where}: the inline cache annotation is not JSON: ${e.message}`);
      }
      return { doc: documentFrom(raw, where), origin };
    }
    throw new TsbuildError("BAD_CACHE", `${where} is neither a tsbuild cache nor an image with an inline cache`, {
      hint: "write one with --cache-to type=registry,ref=\u2026 or --cache-to type=inline"
    });
  } finally {
    client.close();
  }
}
function cacheManifest(doc) {
  const config = serializeCacheDocument(doc);
  const configDesc = { mediaType: CACHE_CONFIG_MEDIA_TYPE, digest: sha256(config), size: config.length };
  const m = { schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: CACHE_ARTIFACT_TYPE, config: configDesc, layers: documentBlobs(doc) };
  return { config, configDesc, manifest: Buffer.from(JSON.stringify(m)) };
}
async function saveRegistry(refText, doc, ctx) {
  const ref = parseReference(refText);
  const { config, configDesc, manifest } = cacheManifest(doc);
  const layers = documentBlobs(doc);
  const mounts = /* @__PURE__ */ new Map();
  for (const b of layers) {
    const from = await mountSource(ctx.store, b.digest, ref.registry, ref.repository);
    if (from !== void 0) mounts.set(b.digest, from);
  }
  const counts = { uploaded: 0, mounted: 0, existed: 0 };
  const client = new RegistryClient(ctx.registry);
  try {
    await pushImage(
      client,
      ref,
      {
        manifest: async () => ({ bytes: manifest, mediaType: MediaType.OciManifest }),
        openBlob: async (d) => d.digest === configDesc.digest ? Readable6.from([config]) : ctx.store.openBlob(d.digest, { signal: ctx.signal })
      },
      {
        signal: ctx.signal,
        mountFrom: (d) => mounts.get(d.digest),
        monolithicMax: Number.POSITIVE_INFINITY,
        onBlob: (e) => {
          if (e.descriptor.digest === configDesc.digest) return;
          counts[e.status === "uploaded" ? "uploaded" : e.status === "mounted" ? "mounted" : "existed"]++;
        }
      }
    );
  } finally {
    client.close();
  }
  await recordOrigins(ctx.store, layers, { kind: "registry", repo: `${ref.registry}/${ref.repository}` });
  return counts;
}
function inlineAnnotation(doc) {
  return { [INLINE_ANNOTATION]: serializeCacheDocument(doc).toString("utf8") };
}
async function readLayoutBlob(dir, d, max) {
  if (!isDigest(d.digest)) throw new TsbuildError("BAD_CACHE", `${dir}: invalid digest ${JSON.stringify(d.digest)}`);
  if (d.size > max) throw new TsbuildError("BAD_CACHE", `${dir}: blob ${d.digest} is ${d.size} bytes, too large`);
  const bytes = await readFile11(join15(dir, "blobs", "sha256", digestHex(d.digest)));
  if (bytes.length !== d.size || sha256(bytes) !== d.digest) throw new TsbuildError("DIGEST_MISMATCH", `${dir}: blob ${d.digest} does not match its digest`);
  return bytes;
}
async function loadLocal(srcDir, tag) {
  const dir = resolvePath6(srcDir);
  let indexBytes;
  try {
    if ((await stat5(join15(dir, "index.json"))).size > MAX_MANIFEST_SIZE) throw new TsbuildError("BAD_CACHE", `${dir}/index.json is too large`);
    indexBytes = await readFile11(join15(dir, "index.json"));
  } catch (e) {
    if (e.code === "ENOENT") return void 0;
    throw e;
  }
  const index = parseIndex(indexBytes, { source: `${dir}/index.json` });
  const entry = index.manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
  if (!entry) return void 0;
  const manifest = parseManifest(await readLayoutBlob(dir, entry, MAX_MANIFEST_SIZE), { source: entry.digest });
  if (manifest.config.mediaType !== CACHE_CONFIG_MEDIA_TYPE) throw new TsbuildError("BAD_CACHE", `${dir} (tag ${tag}) is not a tsbuild cache`);
  const doc = parseCacheDocument(await readLayoutBlob(dir, manifest.config, MAX_CACHE_DOCUMENT), `cache ${dir}`);
  return { doc, origin: { kind: "oci-layout", dir } };
}
async function writeAtomic(file, data) {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile6(tmp, data);
  await rename5(tmp, file);
}
async function saveLocal(destDir, tag, doc, ctx) {
  const dir = resolvePath6(destDir);
  const blobs = join15(dir, "blobs", "sha256");
  await mkdir8(blobs, { recursive: true });
  const counts = { uploaded: 0, existed: 0 };
  const put = async (d, bytes) => {
    const file = join15(blobs, digestHex(d.digest));
    if (await stat5(file).then((s) => s.size === d.size, () => false)) return false;
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      if (bytes) await writeFile6(tmp, bytes);
      else await pipeline7(await ctx.store.openBlob(d.digest, { signal: ctx.signal }), createWriteStream(tmp), { signal: ctx.signal });
      await rename5(tmp, file);
    } catch (e) {
      await rm9(tmp, { force: true });
      throw e;
    }
    return true;
  };
  const { config, configDesc, manifest } = cacheManifest(doc);
  const layers = documentBlobs(doc);
  for (const l of layers) counts[await put(l) ? "uploaded" : "existed"]++;
  await put(configDesc, config);
  const manifestDesc = { mediaType: MediaType.OciManifest, digest: sha256(manifest), size: manifest.length };
  await put(manifestDesc, manifest);
  let index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  try {
    index = parseIndex(await readFile11(join15(dir, "index.json")), { source: `${dir}/index.json` });
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  const manifests = [...index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== tag), { ...manifestDesc, annotations: { [ANNOTATION_REF_NAME]: tag } }];
  await writeAtomic(join15(dir, "oci-layout"), Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
  await writeAtomic(join15(dir, "index.json"), Buffer.from(JSON.stringify({ ...index, manifests })));
  await recordOrigins(ctx.store, layers, { kind: "oci-layout", dir });
  return counts;
}
function ghaPrefix(scope) {
  return `tsbuild-cache-${Buffer.from(scope, "utf8").toString("base64url")}.`;
}
async function loadGha(scope, ctx) {
  const gha = ctx.gha;
  if (!gha) throw new TsbuildError("GHA_UNAVAILABLE", "type=gha needs GitHub's cache service, which only the tsbuild Action can reach", {
    hint: "use the Action (it is given ACTIONS_RUNTIME_TOKEN), or type=registry / type=local"
  });
  const entry = await gha.lookup(ghaPrefix(scope), [], { signal: ctx.signal });
  if (!entry) return void 0;
  const chunks = [];
  let size = 0;
  for await (const c of await entry.open({ signal: ctx.signal })) {
    size += c.length;
    if (size > MAX_CACHE_DOCUMENT) throw new TsbuildError("BAD_CACHE", `gha cache ${entry.matchedKey} is larger than ${MAX_CACHE_DOCUMENT} bytes`);
    chunks.push(c);
  }
  return { doc: parseCacheDocument(Buffer.concat(chunks), `gha cache ${entry.matchedKey}`), origin: { kind: "gha" } };
}
async function saveGha(scope, doc, ctx) {
  const gha = ctx.gha;
  if (!gha) throw new TsbuildError("GHA_UNAVAILABLE", "type=gha needs GitHub's cache service, which only the tsbuild Action can reach");
  const counts = { uploaded: 0, existed: 0 };
  const layers = documentBlobs(doc);
  for (const b of layers) {
    const key2 = ghaBlobKey(b.digest);
    if (await gha.has(key2, { signal: ctx.signal })) {
      counts.existed++;
      continue;
    }
    const r = await gha.save(key2, b.size, () => ctx.store.openBlob(b.digest, { signal: ctx.signal }), { signal: ctx.signal });
    counts[r === "saved" ? "uploaded" : "existed"]++;
  }
  const body = serializeCacheDocument(doc);
  const key = `${ghaPrefix(scope)}${Date.now().toString().padStart(15, "0")}-${digestHex(sha256(body)).slice(0, 16)}`;
  await gha.save(key, body.length, () => Readable6.from([body]), { signal: ctx.signal });
  await recordOrigins(ctx.store, layers, { kind: "gha" });
  return counts;
}

// packages/cache/src/remote.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readdir as readdir7, rm as rm10 } from "node:fs/promises";
function context(o) {
  return { store: o.store, registry: o.registry ?? {}, gha: o.gha, signal: o.signal };
}
var RemoteCaches = class _RemoteCaches {
  constructor(caches, store) {
    this.caches = caches;
    this.store = store;
  }
  caches;
  store;
  static empty(store) {
    return new _RemoteCaches([], store);
  }
  /** Reads every cache; one that is missing or cannot be read is a warning, and the build goes on without it. */
  static async load(specs, o) {
    const ctx = context(o);
    const loaded3 = await Promise.all(
      specs.map(async (spec) => {
        const source = describeCache(spec);
        try {
          const got = spec.type === "registry" ? await loadRegistry(spec.ref, ctx) : spec.type === "local" ? await loadLocal(spec.src, spec.tag) : await loadGha(spec.scope, ctx);
          if (!got) {
            o.warn?.(`cache ${source} not found: building without it`);
            return void 0;
          }
          return {
            ...got,
            source,
            records: new Map(got.doc.records.map((r) => [r.key, r])),
            mounts: new Map(got.doc.mounts.map((m) => [m.name, m]))
          };
        } catch (e) {
          if (o.signal?.aborted) throw e;
          o.warn?.(`cache ${source} cannot be read, building without it: ${e instanceof Error ? e.message : String(e)}`);
          return void 0;
        }
      })
    );
    return new _RemoteCaches(loaded3.filter((l) => l !== void 0), o.store);
  }
  get size() {
    return this.caches.length;
  }
  /**
   * The first cache's result for `key`, made usable: its layer becomes a lazy blob of the store
   * (the compressed blob is known to be `diffId` and where it is). `skip` names keys found to lie.
   */
  async lookup(key, skip = /* @__PURE__ */ new Set()) {
    if (skip.has(key)) return void 0;
    for (const c of this.caches) {
      const entry = c.records.get(key);
      if (!entry) continue;
      if (entry.layer) await adopt(this.store, entry.layer, c.origin);
      return { entry, source: c.source };
    }
    return void 0;
  }
  /** The first cache's contents of the cache mount `name`. */
  async mount(name) {
    for (const c of this.caches) {
      const entry = c.mounts.get(name);
      if (!entry) continue;
      await adopt(this.store, entry.layer, c.origin);
      return { entry, source: c.source };
    }
    return void 0;
  }
};
async function adopt(store, layer, origin) {
  const algo = layerCompression(layer.blob.mediaType);
  if (algo !== "none") await store.recordCompressed(layer.diffId, algo, layer.blob);
  await recordOrigins(store, [layer.blob], origin);
}
async function restoreMount(store, entry, dir, o = {}) {
  try {
    const stats = await apply(decompress(await store.openBlob(entry.layer.blob.digest, { signal: o.signal })), dir, { signal: o.signal });
    if (stats.diffId !== entry.layer.diffId) throw new TsbuildError("CACHE_MISMATCH", `it unpacks to ${stats.diffId}, not the ${entry.layer.diffId} the cache recorded`);
    return true;
  } catch (e) {
    if (o.signal?.aborted) throw e;
    o.warn?.(`cache mount "${entry.id}" was not restored: ${e instanceof Error ? e.message : String(e)}`);
    for (const n of await readdir7(dir).catch(() => [])) await rm10(`${dir}/${n}`, { recursive: true, force: true });
    return false;
  }
}
function selectRecords(input, mode) {
  if (mode === "max") return [...input.records];
  const byKey = new Map(input.records.map((r) => [r.key, r]));
  const out = [];
  for (let r = byKey.get(input.finalKey); r; r = r.parent !== void 0 ? byKey.get(r.parent) : void 0) {
    out.push(r);
    byKey.delete(r.key);
  }
  return out;
}
async function compressedLayer(store, layer, algo, signal) {
  const blob = await store.compressedBlob(layer.diffId, algo, (src, sink) => compress(src, sink, { algorithm: algo, signal }).then(() => {
  }), { signal });
  return { diffId: layer.diffId, size: layer.size, blob };
}
async function cacheDocument(input, spec, o) {
  const records = [];
  for (const r of selectRecords(input, spec.mode)) {
    const e = { key: r.key, parent: r.parent, created: r.created };
    if (r.history) e.history = r.history;
    if (r.config && Object.keys(r.config).length > 0) e.config = r.config;
    if (r.layer) e.layer = await compressedLayer(o.store, r.layer, spec.compression, o.signal);
    records.push(e);
  }
  const mounts = [];
  if (spec.mounts) {
    for (const m of input.mounts) {
      const layer = await mountLayer(o.store, m.dir, input.sourceDateEpoch, o.signal);
      if (layer.size <= 1024) continue;
      if (spec.mountsMaxSize !== void 0 && layer.size > spec.mountsMaxSize) {
        o.warn?.(`cache mount "${m.id}" is ${mib(layer.size)}, more than mounts-max-size (${mib(spec.mountsMaxSize)}): left out of the cache`);
        continue;
      }
      mounts.push({ name: m.name, id: m.id, layer: await compressedLayer(o.store, layer, spec.compression, o.signal) });
    }
  }
  return { tsbuildCache: 1, records, mounts };
}
function mib(n) {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
async function mountLayer(store, dir, epoch, signal) {
  const w = store.blobWriter();
  try {
    const r = await diff(dir, w.stream, { signal, sourceDateEpoch: epoch });
    await w.commit({ digest: r.diffId, size: r.size });
    return r;
  } catch (e) {
    await w.abort().catch(() => {
    });
    throw e;
  }
}
async function exportCaches(specs, input, o) {
  const ctx = context(o);
  const reports = [];
  for (const spec of specs) {
    if (spec.type === "inline") continue;
    const target2 = describeCache(spec);
    try {
      const doc = await cacheDocument(input, spec, o);
      const counts = spec.type === "registry" ? await saveRegistry(spec.ref, doc, ctx) : spec.type === "local" ? await saveLocal(spec.dest, spec.tag, doc, ctx) : await saveGha(spec.scope, doc, ctx);
      const skipped = counts.existed + (counts.mounted ?? 0);
      reports.push({ target: target2, records: doc.records.length, mounts: doc.mounts.length, uploaded: counts.uploaded, skipped });
    } catch (e) {
      if (o.signal?.aborted) throw e;
      const message = `exporting the cache to ${target2} failed: ${e instanceof Error ? e.message : String(e)}`;
      if (!spec.ignoreError) {
        throw new TsbuildError("CACHE_EXPORT", message, { cause: e, hint: "add ignore-error=true to --cache-to to make this a warning" });
      }
      o.warn?.(message);
    }
  }
  return reports;
}

// packages/builder/src/flags.ts
function parseAddHost(spec) {
  const eq = spec.indexOf("=");
  const colon = spec.indexOf(":");
  const at = eq >= 0 && (colon < 0 || eq < colon) ? eq : colon;
  if (at <= 0) throw new UsageError(`--add-host ${spec}: expected HOST:IP`, { hint: "for example --add-host db.internal:10.0.0.5" });
  const host = spec.slice(0, at);
  let ip = spec.slice(at + 1);
  if (ip.startsWith("[") && ip.endsWith("]")) ip = ip.slice(1, -1);
  if (!/^[A-Za-z0-9_.-]+$/.test(host)) throw new UsageError(`--add-host ${spec}: ${JSON.stringify(host)} is not a host name`);
  if (ip === "host-gateway") {
    throw new UsageError(`--add-host ${spec}: host-gateway is not supported`, {
      hint: "RUN steps share the host network by default, so the host is 127.0.0.1"
    });
  }
  if (process.getBuiltinModule("node:net").isIP(ip) === 0) throw new UsageError(`--add-host ${spec}: ${JSON.stringify(ip)} is not an IP address`);
  return { host, ip };
}
var ULIMITS = {
  core: "RLIMIT_CORE",
  cpu: "RLIMIT_CPU",
  data: "RLIMIT_DATA",
  fsize: "RLIMIT_FSIZE",
  locks: "RLIMIT_LOCKS",
  memlock: "RLIMIT_MEMLOCK",
  msgqueue: "RLIMIT_MSGQUEUE",
  nice: "RLIMIT_NICE",
  nofile: "RLIMIT_NOFILE",
  nproc: "RLIMIT_NPROC",
  rss: "RLIMIT_RSS",
  rtprio: "RLIMIT_RTPRIO",
  rttime: "RLIMIT_RTTIME",
  sigpending: "RLIMIT_SIGPENDING",
  stack: "RLIMIT_STACK"
};
function parseUlimit(spec) {
  const eq = spec.indexOf("=");
  const name = eq < 0 ? spec : spec.slice(0, eq);
  const type = Object.hasOwn(ULIMITS, name) ? ULIMITS[name] : void 0;
  if (eq < 0) throw new UsageError(`--ulimit ${spec}: expected TYPE=SOFT[:HARD]`, { hint: "for example --ulimit nofile=1024:2048" });
  if (type === void 0) throw new UsageError(`--ulimit ${spec}: unknown type ${JSON.stringify(name)}`, { hint: `one of ${Object.keys(ULIMITS).join(", ")}` });
  const values = spec.slice(eq + 1).split(":");
  if (values.length > 2) throw new UsageError(`--ulimit ${spec}: expected SOFT[:HARD], got ${values.length} values`);
  const num = (v) => {
    if (v === "-1" || v === "unlimited") return RLIM_INFINITY;
    if (!/^\d{1,19}$/.test(v) || BigInt(v) >= RLIM_INFINITY) throw new UsageError(`--ulimit ${spec}: ${JSON.stringify(v)} is not a limit (a whole number, or -1 for none)`);
    return BigInt(v);
  };
  const soft = num(values[0] ?? "");
  const hard = values[1] === void 0 ? soft : num(values[1]);
  if (soft > hard) throw new UsageError(`--ulimit ${spec}: the soft limit must not be above the hard limit`);
  return { type, soft, hard };
}
function parseUlimits(specs) {
  const byType = /* @__PURE__ */ new Map();
  for (const s of specs) {
    const r = parseUlimit(s);
    byType.delete(r.type);
    byType.set(r.type, r);
  }
  return [...byType.values()];
}
function parseSize2(what, v) {
  const n = parseSize(what, v);
  if (n <= 0 || !Number.isSafeInteger(n)) throw new UsageError(`${what}: size ${JSON.stringify(v)} must be above zero`);
  return n;
}
function parseSsh(spec, env = process.env) {
  const eq = spec.indexOf("=");
  const id = eq < 0 ? spec : spec.slice(0, eq);
  if (!/^[A-Za-z0-9_.-]+$/.test(id)) throw new UsageError(`--ssh ${spec}: expected ID[=SOCKET|KEY[,KEY]]`, { hint: "for example --ssh default or --ssh deploy=$HOME/.ssh/id_ed25519" });
  const paths = eq < 0 ? [] : spec.slice(eq + 1).split(",").filter((p) => p !== "");
  if (paths.length === 0) {
    const sock = env.SSH_AUTH_SOCK;
    if (!sock) throw new UsageError(`--ssh ${spec}: no path given and SSH_AUTH_SOCK is not set`, { hint: "start an agent (eval $(ssh-agent); ssh-add) or name a socket or key file" });
    paths.push(sock);
  }
  const resolved = paths.map((p) => resolvePath7(p));
  for (const p of resolved) {
    const st = statOrUndefined(p);
    if (!st) throw new UsageError(`--ssh ${spec}: ${p === resolved[0] && resolved.length === 1 && eq < 0 ? `${p} ($SSH_AUTH_SOCK)` : p} does not exist`, { hint: "name an agent socket ($SSH_AUTH_SOCK) or private key files" });
    if (st.isSocket() && resolved.length > 1) throw new UsageError(`--ssh ${spec}: an agent socket cannot be combined with other paths`);
    if (!st.isSocket() && !st.isFile()) throw new UsageError(`--ssh ${spec}: ${p} is neither an agent socket nor a key file`);
  }
  return { id, paths: resolved };
}
function statOrUndefined(p) {
  try {
    return statSync2(p);
  } catch {
    return void 0;
  }
}
function contextName(word) {
  let ref;
  try {
    ref = parseReference(word);
  } catch {
    return void 0;
  }
  return ref.digest === void 0 && ref.familiar.endsWith(":latest") ? ref.familiar.slice(0, -":latest".length) : ref.familiar;
}
function parseBuildContext(spec, cwd = process.cwd()) {
  const eq = spec.indexOf("=");
  if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--build-context ${spec}: expected NAME=VALUE`, { hint: "for example --build-context src=../shared or base=docker-image://busybox:1.36" });
  const rawName = spec.slice(0, eq);
  const value = spec.slice(eq + 1);
  const name = contextName(rawName);
  if (name === void 0) throw new UsageError(`--build-context ${spec}: ${JSON.stringify(rawName)} is not a valid context name`, { hint: "names are written as FROM and --from= write them: lower-case, like an image name" });
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === "docker-image") {
    const ref = value.slice("docker-image://".length);
    parseReference(ref);
    return { name, spec, source: { type: "image", ref } };
  }
  if (scheme === "oci-layout") {
    let rest = value.slice("oci-layout://".length);
    let digest;
    let tag;
    const at = rest.lastIndexOf("@");
    if (at > 0 && /^sha256:/.test(rest.slice(at + 1))) {
      try {
        digest = parseDigest(rest.slice(at + 1));
      } catch {
        throw new UsageError(`--build-context ${spec}: ${JSON.stringify(rest.slice(at + 1))} is not a sha256 digest`);
      }
      rest = rest.slice(0, at);
    }
    const colon = rest.lastIndexOf(":");
    if (digest === void 0 && colon > rest.lastIndexOf("/")) {
      tag = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
    if (rest === "") throw new UsageError(`--build-context ${spec}: oci-layout:// needs a directory`);
    const src = { type: "oci-layout", dir: isAbsolute2(rest) ? rest : resolvePath7(cwd, rest) };
    if (tag !== void 0 && tag !== "") src.tag = tag;
    if (digest !== void 0) src.digest = digest;
    return { name, spec, source: src };
  }
  if (scheme !== void 0 || /^git@/.test(value)) {
    throw new UsageError(`--build-context ${spec}: ${scheme ?? "git"} contexts are not supported`, {
      hint: "a context is a local directory, docker-image://REF or oci-layout://DIR[:TAG|@DIGEST]"
    });
  }
  return { name, spec, source: { type: "local", dir: resolvePath7(cwd, value) } };
}
var LEVELS = ["manifest", "index", "manifest-descriptor", "index-descriptor"];
function parseAnnotation(spec) {
  const eq = spec.indexOf("=");
  if (eq <= 0) throw new UsageError(`--annotation ${spec}: expected [TYPE:]KEY=VALUE`, { hint: "for example --annotation org.opencontainers.image.title=app" });
  const k = spec.slice(0, eq);
  const value = spec.slice(eq + 1);
  const colon = k.indexOf(":");
  const types = colon < 0 || colon === 0 ? "manifest" : k.slice(0, colon);
  const key = colon < 0 ? k : k.slice(colon + 1);
  if (key === "") throw new UsageError(`--annotation ${spec}: the key is empty`);
  const out = [];
  for (const t of types.split(",")) {
    const m = /^([a-z-]*)(?:\[([^\]]+)\])?$/.exec(t);
    const level = m?.[1] || "manifest";
    if (!m || !LEVELS.includes(level)) {
      throw new UsageError(`--annotation ${spec}: unknown annotation type ${JSON.stringify(t)}`, { hint: `one of ${LEVELS.join(", ")}, optionally with [PLATFORM]` });
    }
    const a = { level, key, value };
    if (m[2] !== void 0) a.platform = parsePlatform(m[2], `--annotation ${spec}`);
    out.push(a);
  }
  return out;
}
function imageAnnotations(list, platform) {
  const out = { manifest: {}, descriptor: {} };
  for (const a of list) {
    if (a.level === "index" || a.level === "index-descriptor") {
      throw new UsageError(`--annotation ${a.level}:${a.key}: index annotations are not supported for a single-platform image, which has no image index`, {
        hint: "annotate the manifest (manifest:KEY=VALUE, the default) or its descriptor (manifest-descriptor:KEY=VALUE)"
      });
    }
    if (a.platform && formatPlatform(a.platform) !== formatPlatform(platform)) continue;
    (a.level === "manifest" ? out.manifest : out.descriptor)[a.key] = a.value;
  }
  return out;
}

// packages/builder/src/context.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import fs from "node:fs";
import path2 from "node:path";

// packages/builder/src/ignore.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var import_dockerignore = __toESM(require_ignore(), 1);
import { readFile as readFile12 } from "node:fs/promises";
import path from "node:path";
var loaded2 = import_dockerignore.default;
var newEngine = typeof loaded2 === "function" ? loaded2 : loaded2.default;
function parseIgnoreFile(text) {
  const out = [];
  const body = text.charCodeAt(0) === 65279 ? text.slice(1) : text;
  for (const raw of body.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.startsWith("#")) continue;
    const trimmed = line.trim();
    if (trimmed === "" || trimmed === "!") continue;
    out.push(trimmed);
  }
  return out;
}
function createIgnoreMatcher(patterns, source) {
  const list = [...patterns];
  const engine = newEngine();
  engine.add(list);
  const hasExceptions = list.some((p) => p.startsWith("!"));
  const memo = /* @__PURE__ */ new Map();
  return {
    patterns: list,
    hasExceptions,
    source,
    ignores(relPath) {
      if (list.length === 0) return false;
      const key = normalizeRel(relPath);
      if (key === "") return false;
      const seen = memo.get(key);
      if (seen !== void 0) return seen;
      const hit = engine.ignores(key);
      memo.set(key, hit);
      return hit;
    }
  };
}
var NO_IGNORE = createIgnoreMatcher([]);
function normalizeRel(p) {
  const n = path.posix.normalize("/" + p).slice(1);
  return n.endsWith("/") ? n.slice(0, -1) : n;
}
async function loadIgnore(contextDir, dockerfilePath) {
  const candidates = [
    path.resolve(path.dirname(dockerfilePath), path.basename(dockerfilePath) + ".dockerignore"),
    path.resolve(contextDir, ".dockerignore")
  ];
  for (const file of candidates) {
    let text;
    try {
      text = await readFile12(file, "utf8");
    } catch (e) {
      const code = e.code;
      if (code === "ENOENT" || code === "ENOTDIR") continue;
      throw new TsbuildError("IGNORE_FILE", `cannot read ignore file ${file}: ${e.message}`, { cause: e });
    }
    return createIgnoreMatcher(parseIgnoreFile(text), file);
  }
  return NO_IGNORE;
}

// packages/builder/src/context.ts
var SourceNotFoundError = class extends TsbuildError {
  source;
  constructor(source, root, ignoreFile) {
    super(
      "SOURCE_NOT_FOUND",
      `"${source}": not found in build context` + (ignoreFile ? " or excluded by " + path2.basename(ignoreFile) : ""),
      { hint: `source paths are relative to the context root ${root}; "../" cannot leave it` }
    );
    this.source = source;
  }
};
function hasWildcard(p) {
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === "\\") i++;
    else if (c === "*" || c === "?" || c === "[") return true;
  }
  return false;
}
function compileFilepathMatch(component) {
  const bad4 = () => {
    throw new TsbuildError("BAD_PATTERN", `invalid wildcard pattern "${component}"`);
  };
  const lit = (ch) => ch.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
  const inClass = (ch) => ch.replace(/[\\^\]\[-]/g, "\\$&");
  const chars = Array.from(component);
  let re = "^";
  let i = 0;
  const classChar = () => {
    const ch = chars[i];
    if (ch === void 0 || ch === "-" || ch === "]") bad4();
    i++;
    if (ch !== "\\") return ch;
    const esc = chars[i];
    if (esc === void 0) bad4();
    i++;
    return esc;
  };
  while (i < chars.length) {
    const c = chars[i];
    if (c === "*") {
      re += "[^/]*";
      i++;
    } else if (c === "?") {
      re += "[^/]";
      i++;
    } else if (c === "\\") {
      const next = chars[i + 1];
      if (next === void 0) bad4();
      re += lit(next);
      i += 2;
    } else if (c === "[") {
      i++;
      let cls = "[";
      if (chars[i] === "^") {
        cls += "^/";
        i++;
      }
      let ranges = 0;
      for (; ; ) {
        if (chars[i] === "]" && ranges > 0) {
          i++;
          break;
        }
        const lo = classChar();
        let hi = lo;
        if (chars[i] === "-") {
          i++;
          hi = classChar();
          if (hi < lo) bad4();
        }
        cls += lo === hi ? inClass(lo) : inClass(lo) + "-" + inClass(hi);
        ranges++;
      }
      re += cls + "]";
    } else {
      re += lit(c);
      i++;
    }
  }
  return new RegExp(re + "$", "su");
}
function kindOf2(st) {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  return void 0;
}
function lstatOrUndefined2(p) {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return void 0;
  }
}
var BuildContext = class _BuildContext {
  root;
  ignore;
  constructor(root, ignore) {
    this.root = root;
    this.ignore = ignore;
  }
  static async open(dir, opts = {}) {
    let root;
    try {
      root = await fs.promises.realpath(dir);
      if (!(await fs.promises.stat(root)).isDirectory()) throw new Error("not a directory");
    } catch (e) {
      throw new TsbuildError("CONTEXT", `build context ${dir} is not a readable directory`, { cause: e });
    }
    return new _BuildContext(root, opts.ignore ?? NO_IGNORE);
  }
  /** Root-relative path of an absolute path under the root. */
  relativeOf(abs) {
    return abs === this.root ? "" : abs.slice(this.root.length + 1);
  }
  /** Whether .dockerignore hides a root-relative path (a directory with re-included contents is visible). */
  isHidden(rel, isDir, realPath) {
    if (!this.ignore.ignores(rel)) return false;
    if (!isDir || !this.ignore.hasExceptions || realPath === void 0) return true;
    return this.walkDir(realPath, rel, "", NO_IGNORE, []) === 0;
  }
  async resolveSources(patterns, opts = {}) {
    const out = [];
    for (const p of patterns) out.push(...this.resolveOne(p, opts));
    return out;
  }
  resolveOne(source, opts) {
    const follow = opts.followTopLevelSymlink ?? true;
    const excludes = [...opts.excludes ?? []];
    let pivot = "";
    let pattern = source;
    if (opts.parents) {
      const cut = source.indexOf("/./");
      if (cut >= 0) {
        pivot = cleanRel(source.slice(0, cut));
        pattern = source.slice(0, cut) + "/" + source.slice(cut + 3);
      }
    }
    const rel = cleanRel(pattern);
    const wildcard = hasWildcard(rel);
    const excluder = excludes.length > 0 ? createIgnoreMatcher(excludes) : NO_IGNORE;
    const named = !wildcard ? [rel] : opts.parents && rel.split("/").includes("**") ? this.expandDeep(rel) : this.expand(rel);
    const matches = [];
    for (const name of named) {
      const realPath = follow ? secureJoin(this.root, name, { followLast: true }) : secureJoin(this.root, name);
      const st = lstatOrUndefined2(realPath);
      const kind2 = st ? kindOf2(st) : void 0;
      const realRel = this.relativeOf(realPath);
      const hidden = kind2 === void 0 || this.isHidden(realRel, kind2 === "dir", realPath) || name !== realRel && this.isHidden(name, kind2 === "dir", realPath);
      if (hidden || name !== "" && excluder.ignores(name)) {
        if (!wildcard) throw new SourceNotFoundError(source, this.root, this.ignore.source);
        continue;
      }
      matches.push({ source, path: name, realPath, kind: kind2, wildcard, pivot, excludes });
    }
    return matches;
  }
  /** Go filepath.Match over root-relative paths, in lexical order, never descending a symlink. */
  expand(rel) {
    const parts = rel.split("/");
    const firstWild = parts.findIndex((c) => hasWildcard(c));
    const prefix = parts.slice(0, firstWild).join("/");
    const globs = parts.slice(firstWild).map((c) => compileFilepathMatch(c));
    const base = secureJoin(this.root, prefix, { followLast: true });
    const baseSt = lstatOrUndefined2(base);
    if (!baseSt?.isDirectory()) return [];
    const out = [];
    const visit = (dirAbs, dirNamed, depth) => {
      const glob = globs[depth];
      const last = depth === globs.length - 1;
      let names2;
      try {
        names2 = fs.readdirSync(dirAbs).sort();
      } catch {
        return;
      }
      for (const name of names2) {
        if (!glob.test(name)) continue;
        const named = dirNamed === "" ? name : dirNamed + "/" + name;
        if (last) {
          out.push(named);
          continue;
        }
        const abs = dirAbs + "/" + name;
        if (lstatOrUndefined2(abs)?.isDirectory()) visit(abs, named, depth + 1);
      }
    };
    visit(base, prefix, 0);
    return out;
  }
  /** Like `expand`, with `**` components matching zero or more directories; nested hits fold into their ancestor. */
  expandDeep(rel) {
    const parts = rel.split("/");
    const firstWild = parts.findIndex((c) => hasWildcard(c));
    const prefix = parts.slice(0, firstWild).join("/");
    const rest = parts.slice(firstWild).map((c) => c === "**" ? null : compileFilepathMatch(c));
    const base = secureJoin(this.root, prefix, { followLast: true });
    if (!lstatOrUndefined2(base)?.isDirectory()) return [];
    const found2 = /* @__PURE__ */ new Set();
    const seen = /* @__PURE__ */ new Set();
    const visit = (dirAbs, dirNamed, depth) => {
      const key = `${depth}\0${dirNamed}`;
      if (seen.has(key)) return;
      seen.add(key);
      const glob = rest[depth];
      if (glob === void 0) return;
      const last = depth === rest.length - 1;
      let names2;
      try {
        names2 = fs.readdirSync(dirAbs).sort();
      } catch {
        return;
      }
      if (glob === null) {
        if (last) {
          for (const name of names2) found2.add(dirNamed === "" ? name : dirNamed + "/" + name);
          return;
        }
        visit(dirAbs, dirNamed, depth + 1);
      }
      for (const name of names2) {
        if (glob !== null && !glob.test(name)) continue;
        const named = dirNamed === "" ? name : dirNamed + "/" + name;
        const abs = dirAbs + "/" + name;
        const isDir = lstatOrUndefined2(abs)?.isDirectory() === true;
        if (glob === null) {
          if (isDir) visit(abs, named, depth);
          continue;
        }
        if (last) found2.add(named);
        else if (isDir) visit(abs, named, depth + 1);
      }
    };
    visit(base, prefix, 0);
    const underAnother = (p) => {
      for (let i = p.indexOf("/"); i >= 0; i = p.indexOf("/", i + 1)) if (found2.has(p.slice(0, i))) return true;
      return false;
    };
    return [...found2].sort().filter((p) => !underAnother(p));
  }
  /**
   * Every entry a match selects, `.dockerignore` and `--exclude` applied, in the order hashing
   * and copying use. Symlinks below the match are entries, never followed.
   */
  walk(match) {
    const st = fs.lstatSync(match.realPath, { bigint: true });
    const top = {
      rel: "",
      abs: match.realPath,
      kind: match.kind,
      stat: st,
      linkTarget: match.kind === "symlink" ? fs.readlinkSync(match.realPath) : void 0
    };
    if (match.kind !== "dir") return [top];
    const excluder = match.excludes.length > 0 ? createIgnoreMatcher(match.excludes) : NO_IGNORE;
    const out = [top];
    this.walkDir(match.realPath, this.relativeOf(match.realPath), "", excluder, out);
    return out;
  }
  /** Appends the visible entries below `dirAbs` to `out`; returns how many it appended. */
  walkDir(dirAbs, ctxRel, rel, excluder, out) {
    const start = out.length;
    let names2;
    try {
      names2 = fs.readdirSync(dirAbs).sort();
    } catch (e) {
      throw new TsbuildError("CONTEXT_READ", `cannot read directory ${dirAbs}: ${e.message}`, { cause: e });
    }
    for (const name of names2) {
      const abs = dirAbs + "/" + name;
      const childCtx = ctxRel === "" ? name : ctxRel + "/" + name;
      const childRel = rel === "" ? name : rel + "/" + name;
      const st = fs.lstatSync(abs, { bigint: true });
      const kind2 = kindOf2(st);
      if (kind2 === void 0) continue;
      const hidden = this.ignore.ignores(childCtx) || excluder.ignores(childRel);
      if (kind2 === "dir") {
        const canHoldVisible = this.ignore.hasExceptions || excluder.hasExceptions;
        if (hidden && !canHoldVisible) continue;
        const at = out.length;
        out.push({ rel: childRel, abs, kind: kind2, stat: st, linkTarget: void 0 });
        const below = this.walkDir(abs, childCtx, childRel, excluder, out);
        if (hidden && below === 0) out.splice(at, 1);
        continue;
      }
      if (hidden) continue;
      out.push({ rel: childRel, abs, kind: kind2, stat: st, linkTarget: kind2 === "symlink" ? fs.readlinkSync(abs) : void 0 });
    }
    return out.length - start;
  }
};
function cleanRel(p) {
  const n = path2.posix.normalize("/" + p);
  return n.replace(/^\/+/, "").replace(/\/+$/, "");
}

// packages/builder/src/hash.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash10 } from "node:crypto";
import fs2 from "node:fs";
import path3 from "node:path";

// tsbuild-native:@napi-rs/blake-hash
init_define_TSBUILD_NATIVE_VERSIONS();
function blake3(...a) {
  return loadNative("@napi-rs/blake-hash").blake3(...a);
}
var Blake3Hasher = function Blake3Hasher2(...a) {
  return new (loadNative("@napi-rs/blake-hash")).Blake3Hasher(...a);
};

// packages/builder/src/hash.ts
var SMALL_FILE = 1 << 20;
var CHUNK2 = 4 << 20;
var chunkBuffer;
function hashFileContent(absPath, size) {
  if (size < SMALL_FILE) return blake3(fs2.readFileSync(absPath)).toString("hex");
  const fd = fs2.openSync(absPath, "r");
  try {
    const hasher = new Blake3Hasher();
    chunkBuffer ??= Buffer.allocUnsafe(CHUNK2);
    for (; ; ) {
      const n = fs2.readSync(fd, chunkBuffer, 0, CHUNK2, null);
      if (n === 0) break;
      hasher.update(chunkBuffer.subarray(0, n));
    }
    return hasher.digest("hex");
  } finally {
    fs2.closeSync(fd);
  }
}
var RACY_WINDOW_MS = 100;
var MAX_UNUSED_ENTRIES = 5e5;
var StatCache = class _StatCache {
  file;
  rows;
  used = /* @__PURE__ */ new Set();
  dirty = false;
  racyNs;
  constructor(file, rows, racyWindowMs) {
    this.file = file;
    this.rows = rows;
    this.racyNs = BigInt(Math.round(racyWindowMs * 1e6));
  }
  /**
   * Loads the cache; a missing or unreadable file starts an empty one (it is only a cache).
   * `racyWindowMs`: how recent a change must be, relative to the moment it was hashed, for the
   * hash not to be trusted (default 100 ms, well above the kernel's timestamp granularity).
   */
  static async load(file, opts = {}) {
    let rows = /* @__PURE__ */ new Map();
    try {
      const parsed = JSON.parse(await fs2.promises.readFile(file, "utf8"));
      if (parsed.version === 1 && parsed.entries && typeof parsed.entries === "object") {
        rows = new Map(Object.entries(parsed.entries).filter(([, r]) => Array.isArray(r) && r.length === 7));
      }
    } catch {
      rows = /* @__PURE__ */ new Map();
    }
    return new _StatCache(file, rows, opts.racyWindowMs ?? RACY_WINDOW_MS);
  }
  get size() {
    return this.rows.size;
  }
  lookup(absPath, st) {
    const row = this.rows.get(absPath);
    if (!row) return void 0;
    if (row[0] !== String(st.dev) || row[1] !== String(st.ino) || row[2] !== String(st.size)) return void 0;
    if (row[3] !== String(st.mtimeNs) || row[4] !== String(st.ctimeNs)) return void 0;
    const newest = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
    if (newest + this.racyNs >= BigInt(row[5])) return void 0;
    this.used.add(absPath);
    return row[6];
  }
  store(absPath, st, hashedAtNs, hash) {
    this.rows.set(absPath, [
      String(st.dev),
      String(st.ino),
      String(st.size),
      String(st.mtimeNs),
      String(st.ctimeNs),
      String(hashedAtNs),
      hash
    ]);
    this.used.add(absPath);
    this.dirty = true;
  }
  /** Writes the cache (temp file + rename) if anything changed; returns whether it wrote. */
  async save() {
    if (!this.dirty) return false;
    if (this.rows.size > MAX_UNUSED_ENTRIES) {
      for (const key of this.rows.keys()) if (!this.used.has(key)) this.rows.delete(key);
    }
    const body = { version: 1, entries: Object.fromEntries(this.rows) };
    await fs2.promises.mkdir(path3.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    try {
      await fs2.promises.writeFile(tmp, JSON.stringify(body));
      await fs2.promises.rename(tmp, this.file);
    } catch (e) {
      await fs2.promises.rm(tmp, { force: true });
      throw new TsbuildError("STAT_CACHE", `cannot write stat cache ${this.file}: ${e.message}`, { cause: e });
    }
    this.dirty = false;
    return true;
  }
};
async function hashSources(ctx, matches, opts = {}) {
  const hashFile = opts.hashFile ?? hashFileContent;
  const cache = opts.statCache;
  const out = createHash10("sha256");
  let n = 0;
  for (const [i, match] of matches.entries()) {
    out.update(`match\0${match.source}\0${match.path}\0${match.pivot}\0${match.kind}\0${match.excludes.join("\0")}
`);
    const seenInodes = /* @__PURE__ */ new Map();
    for (const e of opts.walks?.[i] ?? ctx.walk(match)) {
      if ((n++ & 1023) === 0) {
        await new Promise((resolve3) => setImmediate(resolve3));
        if (opts.signal?.aborted) throw new CancelledError("hashing cancelled", { cause: opts.signal.reason });
      }
      const perm = (Number(e.stat.mode) & 4095).toString(8);
      let content = "";
      if (e.kind === "symlink") content = e.linkTarget ?? "";
      else if (e.kind === "file") {
        const inode = `${e.stat.dev}:${e.stat.ino}`;
        const first = e.stat.nlink > 1n ? seenInodes.get(inode) : void 0;
        if (first !== void 0) content = "link:" + first;
        else {
          if (e.stat.nlink > 1n) seenInodes.set(inode, e.rel);
          content = contentHash(e.abs, e.stat, hashFile, cache);
        }
      }
      out.update(`${e.rel}\0${e.kind}\0${perm}\0${content}
`);
      opts.onEntry?.(e.rel === "" ? match.path || "." : match.path ? `${match.path}/${e.rel}` : e.rel, `${e.kind}:${perm}:${content}`);
    }
  }
  return "sources:" + out.digest("hex");
}
function contentHash(abs, st, hashFile, cache) {
  const cached = cache?.lookup(abs, st);
  if (cached !== void 0) return cached;
  const hashedAt = BigInt(Date.now()) * 1000000n;
  let hash;
  try {
    hash = hashFile(abs, Number(st.size));
  } catch (e) {
    throw new TsbuildError("CONTEXT_READ", `cannot read ${abs}: ${e.message}`, { cause: e });
  }
  cache?.store(abs, st, hashedAt, hash);
  return hash;
}

// packages/builder/src/check.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile13, stat as stat6 } from "node:fs/promises";
import { join as join16, resolve as resolvePath8 } from "node:path";

// packages/dockerfile/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/parser.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/directives.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DIRECTIVE_NAMES = ["syntax", "escape", "check"];
var DIRECTIVE_RE = /^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=/;
function isRegexSpace(c) {
  return c === " " || c === "	" || c === "\n" || c === "\f" || c === "\r";
}
function directiveValue(after) {
  if (after.length === 0) return void 0;
  let start = 0;
  while (start < after.length && isRegexSpace(after[start])) start++;
  if (start === after.length) return after.slice(-1);
  let end = after.length;
  while (end > start && isRegexSpace(after[end - 1])) end--;
  return after.slice(start, end);
}
function isDirectiveName(name) {
  return DIRECTIVE_NAMES.includes(name);
}
var DirectiveError = class extends Error {
};
var DirectiveScanner = class {
  done = false;
  seen = /* @__PURE__ */ new Set();
  values = {};
  /**
   * Looks at one physical line (newline and leading whitespace already removed).
   * Returns the directive it holds, or undefined; throws DirectiveError on a repeated directive.
   */
  scan(line) {
    if (this.done) return void 0;
    const m = DIRECTIVE_RE.exec(line);
    const rawName = m?.[1];
    const value = m ? directiveValue(line.slice(m[0].length)) : void 0;
    if (rawName === void 0 || value === void 0) {
      this.done = true;
      return void 0;
    }
    const name = rawName.toLowerCase();
    if (!isDirectiveName(name)) {
      this.done = true;
      return void 0;
    }
    if (this.seen.has(name)) throw new DirectiveError(`only one ${name} parser directive can be used`);
    this.seen.add(name);
    this.values[name] = value;
    return { name, value };
  }
};

// packages/dockerfile/src/gotext.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function isSpace(c) {
  if (c === void 0) return false;
  switch (c) {
    case " ":
    case "	":
    case "\n":
    case "\v":
    case "\f":
    case "\r":
    case "\x85":
    case "\xA0":
    case "\u1680":
    case "\u2028":
    case "\u2029":
    case "\u202F":
    case "\u205F":
    case "\u3000":
      return true;
    default:
      return c >= "\u2000" && c <= "\u200A";
  }
}
function isArgSpace(c) {
  return c === " " || c === "	" || c === "\v" || c === "\f" || c === "\r";
}
function trimLeftSpace(s) {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return s.slice(i);
}
function trimSpace(s) {
  let end = s.length;
  while (end > 0 && isSpace(s[end - 1])) end--;
  let start = 0;
  while (start < end && isSpace(s[start])) start++;
  return s.slice(start, end);
}
function splitArgs(s, two = false) {
  const out = [];
  let start = 0;
  let i = 0;
  while (i < s.length) {
    if (isArgSpace(s[i])) {
      let j = i;
      while (j < s.length && isArgSpace(s[j])) j++;
      out.push(s.slice(start, i));
      start = j;
      i = j;
      if (two) break;
    } else {
      i++;
    }
  }
  out.push(s.slice(start));
  return out;
}
function leadingSpaceWidth(s) {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return i;
}
var PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
function hex(n, width) {
  return n.toString(16).padStart(width, "0");
}
function goQuote(s) {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (cp >= 55296 && cp <= 57343) out += "\uFFFD";
    else if (PRINTABLE.test(ch)) out += ch;
    else if (cp === 7) out += "\\a";
    else if (cp === 8) out += "\\b";
    else if (cp === 12) out += "\\f";
    else if (cp === 10) out += "\\n";
    else if (cp === 13) out += "\\r";
    else if (cp === 9) out += "\\t";
    else if (cp === 11) out += "\\v";
    else if (cp < 32 || cp === 127) out += `\\x${hex(cp, 2)}`;
    else if (cp < 65536) out += `\\u${hex(cp, 4)}`;
    else out += `\\U${hex(cp, 8)}`;
  }
  return out + '"';
}

// packages/dockerfile/src/heredoc.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/lines.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function trimContinuation(line, escape) {
  let end = line.length;
  while (end > 0 && (line[end - 1] === " " || line[end - 1] === "	")) end--;
  if (end === 0 || line[end - 1] !== escape) return void 0;
  if (end === 1) return "";
  if (line[end - 2] === escape) return void 0;
  return line.slice(0, end - 1);
}
function isComment(line) {
  return trimLeftSpace(line).startsWith("#");
}
function trimNewline(line) {
  let end = line.length;
  while (end > 0 && (line[end - 1] === "\n" || line[end - 1] === "\r")) end--;
  return line.slice(0, end);
}
function physicalLines(text) {
  const lines = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf("\n", start);
    const end = nl < 0 ? text.length : nl + 1;
    lines.push(text.slice(start, end));
    start = end;
  }
  return lines;
}

// packages/dockerfile/src/heredoc.ts
var HEREDOC_INSTRUCTIONS = /* @__PURE__ */ new Set(["add", "copy", "run"]);
function canContainHeredoc(n) {
  let target2 = n;
  if (target2.value === "onbuild") {
    const sub = target2.next?.children[0];
    if (sub) target2 = sub;
  }
  return HEREDOC_INSTRUCTIONS.has(target2.value) && target2.attributes.json !== true;
}
function shellWords(line) {
  const words2 = [];
  let raw = "";
  let cooked = "";
  let quoted = false;
  let inWord = false;
  const flush = () => {
    if (inWord) words2.push({ raw, cooked, quoted });
    raw = "";
    cooked = "";
    quoted = false;
    inWord = false;
  };
  const n = line.length;
  for (let i = 0; i < n; i++) {
    const c = line[i] ?? "";
    if (isSpace(c)) {
      flush();
      continue;
    }
    inWord = true;
    if (c === "\\") {
      const next = line[i + 1];
      if (next === void 0) {
        raw += c;
        continue;
      }
      raw += c + next;
      cooked += next;
      i++;
      continue;
    }
    if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close < 0) return void 0;
      raw += line.slice(i, close + 1);
      cooked += line.slice(i + 1, close);
      quoted = true;
      i = close;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      let body = "";
      for (; j < n; j++) {
        const d = line[j];
        if (d === '"') break;
        if (d === "\\" && j + 1 < n) {
          const e = line[j + 1] ?? "";
          body += e === '"' || e === "\\" || e === "$" || e === "`" ? e : d + e;
          j++;
          continue;
        }
        body += d ?? "";
      }
      if (j >= n) return void 0;
      raw += line.slice(i, j + 1);
      cooked += body;
      quoted = true;
      i = j;
      continue;
    }
    if (c === "$" && line[i + 1] === "{") {
      const close = line.indexOf("}", i + 2);
      const end = close < 0 ? n - 1 : close;
      raw += line.slice(i, end + 1);
      cooked += line.slice(i, end + 1);
      i = end;
      continue;
    }
    raw += c;
    cooked += c;
  }
  flush();
  return words2;
}
var HEREDOC_RE = /^(\d*)<<(-?)([^<]*)$/s;
function heredocsFromLine(line) {
  const words2 = shellWords(line);
  if (!words2) return [];
  const docs = [];
  for (const word of words2) {
    const m = HEREDOC_RE.exec(word.raw);
    if (!m) continue;
    const chomp = m[2] === "-";
    const rest = m[3] ?? "";
    if (rest === "") continue;
    const inner = shellWords(rest);
    const only = inner?.[0];
    if (!inner || inner.length !== 1 || !only || only.cooked === "") continue;
    docs.push({ name: only.cooked, content: "", expand: !only.quoted, chomp });
  }
  return docs;
}
function readHeredocBody(lines, start, doc) {
  let i = start;
  let content = "";
  while (i < lines.length) {
    const body = lines[i] ?? "";
    i++;
    let candidate = trimNewline(body);
    if (doc.chomp) candidate = candidate.replace(/^\t+/, "");
    if (candidate === doc.name) {
      doc.content = doc.chomp ? content.replace(/(^|\n)\t+/g, "$1") : content;
      return { next: i, terminated: true };
    }
    content += body;
  }
  return { next: i, terminated: false };
}

// packages/dockerfile/src/line-parsers.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var NO_RANGE = { start: { line: 0, column: 0 }, end: { line: 0, column: 0 } };
function node(value, next) {
  return {
    value,
    next,
    children: [],
    heredocs: [],
    attributes: {},
    original: "",
    flags: [],
    range: NO_RANGE,
    prevComment: []
  };
}
function chain(values) {
  let head;
  for (let i = values.length - 1; i >= 0; i--) head = node(values[i] ?? "", head);
  return head;
}
var LineError = class extends Error {
  constructor(message, hint) {
    super(message);
    this.hint = hint;
  }
  hint;
};
function extractFlags(line) {
  const flags = [];
  let pos = 0;
  const n = line.length;
  for (; ; ) {
    while (pos < n && isSpace(line[pos])) pos++;
    if (pos >= n) return { rest: "", flags };
    if (line[pos] !== "-" || line[pos + 1] !== "-") return { rest: line.slice(pos), flags };
    let word = "";
    let blankOK = false;
    let quote = "";
    for (; pos < n; pos++) {
      const ch = line[pos] ?? "";
      if (quote !== "") {
        if (ch === quote) {
          quote = "";
          continue;
        }
        if (ch === "\\") {
          if (pos + 1 === n) {
            quote = "";
            continue;
          }
          pos++;
          word += line[pos] ?? "";
          continue;
        }
        word += ch;
        continue;
      }
      if (isSpace(ch)) break;
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        continue;
      }
      if (ch === "\\") {
        if (pos + 1 === n) continue;
        pos++;
        word += line[pos] ?? "";
        continue;
      }
      word += ch;
    }
    if (word === "--") return { rest: pos >= n ? "" : line.slice(pos), flags };
    if (blankOK || word.length > 0) flags.push(word);
    if (pos >= n) return { rest: "", flags };
  }
}
function parseWords(rest, escape) {
  const words2 = [];
  let word = "";
  let inWord = false;
  let blankOK = false;
  let quote = "";
  const n = rest.length;
  for (let pos = 0; pos < n; pos++) {
    let ch = rest[pos] ?? "";
    if (!inWord) {
      if (isSpace(ch)) continue;
      inWord = true;
    }
    if (quote === "") {
      if (isSpace(ch)) {
        if (blankOK || word.length > 0) words2.push(word);
        word = "";
        blankOK = false;
        inWord = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
      } else if (ch === escape) {
        if (pos + 1 === n) continue;
        word += ch;
        pos++;
        ch = rest[pos] ?? "";
      }
      word += ch;
      continue;
    }
    const closing = ch === quote;
    if (ch === escape && quote !== "'") {
      if (pos + 1 === n) {
        quote = "";
        continue;
      }
      word += ch;
      pos++;
      ch = rest[pos] ?? "";
    }
    if (closing) quote = "";
    word += ch;
  }
  if (inWord && (blankOK || word.length > 0)) words2.push(word);
  return words2;
}
var NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only";
var MAX_JSON_DEPTH = 1e4;
function jsonDepthExceeded(s) {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === "[" || c === "{") {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === "]" || c === "}") {
      depth--;
    }
  }
  return false;
}
function hasOverflowingNumber(value) {
  const stack = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "number" && !Number.isFinite(v)) return true;
    if (Array.isArray(v)) for (const item of v) stack.push(item);
    else if (v !== null && typeof v === "object") for (const item of Object.values(v)) stack.push(item);
  }
  return false;
}
function parseJSON(rest) {
  const text = trimLeftSpace(rest);
  if (!text.startsWith("[")) return "invalid";
  if (jsonDepthExceeded(text)) return "invalid";
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return "invalid";
  }
  if (!Array.isArray(value) || hasOverflowingNumber(value)) return "invalid";
  const strings = [];
  for (const item of value) {
    if (typeof item !== "string") {
      throw new LineError(NOT_STRING_ARRAY, 'write exec form as ["executable", "arg", \u2026] with strings only');
    }
    strings.push(item);
  }
  return { next: chain(strings), attrs: { json: true } };
}
function parseIgnore() {
  return { next: node(""), attrs: {} };
}
function parseString(rest) {
  return { next: rest === "" ? void 0 : node(rest), attrs: {} };
}
function parseStringsWhitespaceDelimited(rest) {
  if (rest === "") return { next: void 0, attrs: {} };
  return { next: chain(splitArgs(rest)), attrs: {} };
}
function parseMaybeJSON(rest) {
  if (rest === "") return { next: void 0, attrs: {} };
  const json = parseJSON(rest);
  if (json !== "invalid") return json;
  return { next: node(rest), attrs: {} };
}
function parseMaybeJSONToList(rest) {
  const json = parseJSON(rest);
  if (json !== "invalid") return json;
  return parseStringsWhitespaceDelimited(rest);
}
function parseNameVal(rest, key, ctx) {
  const words2 = parseWords(rest, ctx.escape);
  const first = words2[0];
  if (first === void 0) return { next: void 0, attrs: {} };
  if (!first.includes("=")) {
    const parts = splitArgs(rest, true);
    if (parts.length < 2) {
      throw new LineError(`${key} must have two arguments`, `write ${key} name=value`);
    }
    return { next: chain([parts[0] ?? "", parts[1] ?? "", ""]), attrs: {} };
  }
  const flat = [];
  for (const word of words2) {
    const eq = word.indexOf("=");
    if (eq < 0) {
      throw new LineError(
        `Syntax error - can't find = in ${goQuote(word)}. Must be of the form: name=value`,
        `every ${key} item must be name=value; quote values that contain spaces`
      );
    }
    flat.push(word.slice(0, eq), word.slice(eq + 1), "=");
  }
  return { next: chain(flat), attrs: {} };
}
function parseNameOrNameVal(rest, ctx) {
  return { next: chain(parseWords(rest, ctx.escape)), attrs: {} };
}
function parseHealthConfig(rest) {
  let sep = 0;
  while (sep < rest.length && !isSpace(rest[sep])) sep++;
  if (sep === 0) return { next: void 0, attrs: {} };
  let next = sep;
  while (next < rest.length && isSpace(rest[next])) next++;
  const cmd = parseMaybeJSON(rest.slice(next));
  return { next: node(rest.slice(0, sep), cmd.next), attrs: cmd.attrs };
}
var MAX_ONBUILD_DEPTH = 32;
function parseSubCommand(rest, ctx) {
  if (rest === "") return { next: void 0, attrs: {} };
  if (ctx.depth >= MAX_ONBUILD_DEPTH) throw new LineError("ONBUILD instructions are nested too deeply");
  const child = nodeFromLine(rest, { escape: ctx.escape, depth: ctx.depth + 1 }, []);
  const holder = node("");
  holder.children.push(child);
  return { next: holder, attrs: {} };
}
var DISPATCH = /* @__PURE__ */ new Map([
  ["add", parseMaybeJSONToList],
  ["arg", parseNameOrNameVal],
  ["cmd", parseMaybeJSON],
  ["copy", parseMaybeJSONToList],
  ["entrypoint", parseMaybeJSON],
  ["env", (rest, ctx) => parseNameVal(rest, "ENV", ctx)],
  ["expose", parseStringsWhitespaceDelimited],
  ["from", parseStringsWhitespaceDelimited],
  ["healthcheck", parseHealthConfig],
  ["label", (rest, ctx) => parseNameVal(rest, "LABEL", ctx)],
  ["maintainer", parseString],
  ["onbuild", parseSubCommand],
  ["run", parseMaybeJSON],
  ["shell", parseMaybeJSON],
  ["stopsignal", parseString],
  ["user", parseString],
  ["volume", parseMaybeJSONToList],
  ["workdir", parseString]
]);
function nodeFromLine(line, ctx, comments) {
  const trimmed = trimSpace(line);
  let cmd = trimmed;
  let args = "";
  let flags = [];
  const parts = splitArgs(trimmed, true);
  if (parts.length === 2) {
    cmd = parts[0] ?? "";
    const extracted = extractFlags(parts[1] ?? "");
    args = trimSpace(extracted.rest);
    flags = extracted.flags;
  }
  const keyword = cmd.toLowerCase();
  const fn = DISPATCH.get(keyword);
  const parsed = fn ? fn(args, ctx) : parseIgnore();
  const n = node(keyword, parsed.next);
  n.attributes = parsed.attrs;
  n.original = line;
  n.flags = flags;
  n.prevComment = comments;
  return n;
}

// packages/dockerfile/src/lint/rules.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function kebabRuleName(name) {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/([A-Z]+)([A-Z][a-z])/g, "$1-$2").toLowerCase();
}
function rule(name, description, format2, experimental = false) {
  return { name, description, url: `https://docs.docker.com/go/dockerfile/rule/${kebabRuleName(name)}/`, experimental, format: format2 };
}
function q(s) {
  return JSON.stringify(s);
}
var RULES = {
  StageNameCasing: rule(
    "StageNameCasing",
    "Stage names should be lowercase",
    (stage) => `Stage name '${stage}' should be lowercase`
  ),
  FromAsCasing: rule(
    "FromAsCasing",
    "The 'as' keyword should match the case of the 'from' keyword",
    (from, as) => `'${as}' and '${from}' keywords' casing do not match`
  ),
  NoEmptyContinuation: rule(
    "NoEmptyContinuation",
    "Empty continuation lines will become errors in a future release",
    () => "Empty continuation line"
  ),
  ConsistentInstructionCasing: rule(
    "ConsistentInstructionCasing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    (command2, casing) => `Command '${command2}' should match the case of the command majority (${casing})`
  ),
  DuplicateStageName: rule(
    "DuplicateStageName",
    "Stage names should be unique",
    (stage) => `Duplicate stage name ${q(stage)}, stage names should be unique`
  ),
  ReservedStageName: rule(
    "ReservedStageName",
    "Reserved words should not be used as stage names",
    (stage) => `Stage name should not use the same name as reserved stage ${q(stage)}`
  ),
  JSONArgsRecommended: rule(
    "JSONArgsRecommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    (instruction) => `JSON arguments recommended for ${instruction} to prevent unintended behavior related to OS signals`
  ),
  MaintainerDeprecated: rule(
    "MaintainerDeprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    () => "Maintainer instruction is deprecated in favor of using label"
  ),
  UndefinedArgInFrom: rule(
    "UndefinedArgInFrom",
    "FROM command must use declared ARGs",
    (arg, suggestion) => `FROM argument '${arg}' is not declared${suggestion ? ` (did you mean ${suggestion}?)` : ""}`
  ),
  WorkdirRelativePath: rule(
    "WorkdirRelativePath",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    (workdir) => `Relative workdir ${q(workdir)} can have unexpected results if the base image changes`
  ),
  UndefinedVar: rule(
    "UndefinedVar",
    "Variables should be defined before their use",
    (name, suggestion) => `Usage of undefined variable '$${name}'${suggestion ? ` (did you mean $${suggestion}?)` : ""}`
  ),
  MultipleInstructionsDisallowed: rule(
    "MultipleInstructionsDisallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    (instruction) => `Multiple ${instruction} instructions should not be used in the same stage because only the last one will be used`
  ),
  LegacyKeyValueFormat: rule(
    "LegacyKeyValueFormat",
    "Legacy key/value format with whitespace separator should not be used",
    (instruction) => `"${instruction} key=value" should be used instead of legacy "${instruction} key value" format`
  ),
  RedundantTargetPlatform: rule(
    "RedundantTargetPlatform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    (platform) => `Setting platform to predefined ${platform} in FROM is redundant as this is the default behavior`
  ),
  SecretsUsedInArgOrEnv: rule(
    "SecretsUsedInArgOrEnv",
    "Sensitive data should not be used in the ARG or ENV commands",
    (instruction, key) => `Do not use ARG or ENV instructions for sensitive data (${instruction} ${q(key)})`
  ),
  InvalidDefaultArgInFrom: rule(
    "InvalidDefaultArgInFrom",
    "Default value for global ARG results in an empty or invalid base image name",
    (image) => `Default value for ARG ${image} results in empty or invalid base image name`
  ),
  FromPlatformFlagConstDisallowed: rule(
    "FromPlatformFlagConstDisallowed",
    "FROM --platform flag should not use a constant value",
    (platform) => `FROM --platform flag should not use constant value ${q(platform)}`
  ),
  CopyIgnoredFile: rule(
    "CopyIgnoredFile",
    "Attempting to Copy file that is excluded by .dockerignore",
    (instruction, file) => `Attempting to ${instruction} file ${q(file)} that is excluded by .dockerignore`
  ),
  InvalidDefinitionDescription: rule(
    "InvalidDefinitionDescription",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    (instruction, name) => `Comment for ${instruction} should follow the format: \`# ${name} <description>\``,
    true
  ),
  ExposeProtoCasing: rule(
    "ExposeProtoCasing",
    "Protocol in EXPOSE instruction should be lowercase",
    (port) => `Defined protocol '${port}' in EXPOSE instruction should be lowercase`
  ),
  ExposeInvalidFormat: rule(
    "ExposeInvalidFormat",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    (port) => `EXPOSE instruction should not define an IP address or host-port mapping, found '${port}'`
  )
};
var RULE_LIST = Object.values(RULES);

// packages/dockerfile/src/parser.ts
function parse(text) {
  const lines = physicalLines(text);
  if (lines.length > 0 && lines[0]?.startsWith("\uFEFF")) lines[0] = lines[0].slice(1);
  const directives = new DirectiveScanner();
  let escape = "\\";
  const warnings = [];
  const children = [];
  let comments = [];
  const fail2 = (message, startLine, endLine, hint) => {
    const last = trimNewline(lines[endLine - 1] ?? "");
    const range = {
      start: { line: startLine, column: 1 },
      end: { line: endLine, column: last.length + 1 }
    };
    const options = {
      range,
      excerpt: excerptOf(text, range)
    };
    if (hint !== void 0) options.hint = hint;
    throw new DockerfileError(message, options);
  };
  const processLine = (raw, lineNo, stripLeft) => {
    let line = trimNewline(raw);
    if (stripLeft) line = trimLeftSpace(line);
    let directive = false;
    try {
      const found2 = directives.scan(line);
      if (found2) {
        directive = true;
        if (found2.name === "escape") {
          if (found2.value !== "\\" && found2.value !== "`") {
            const shown3 = found2.value.length > 20 ? `${found2.value.slice(0, 20)}\u2026` : found2.value;
            fail2(
              `invalid escape token '${shown3}' does not match \` or \\`,
              lineNo,
              lineNo,
              "use # escape=\\ or # escape=`"
            );
          }
          escape = found2.value;
        }
      }
    } catch (err) {
      if (err instanceof DirectiveError) fail2(err.message, lineNo, lineNo);
      throw err;
    }
    return { line: isComment(line) ? "" : line, directive };
  };
  let i = 0;
  while (i < lines.length) {
    const raw = lines[i] ?? "";
    const lineNo = i + 1;
    i++;
    if (isComment(raw)) {
      const comment = trimSpace(raw.slice(1));
      if (comment === "") comments = [];
      else comments.push(comment);
    }
    const first = processLine(raw, lineNo, true);
    if (first.directive) comments.pop();
    const startLine = lineNo;
    const startColumn = leadingSpaceWidth(raw) + 1;
    let buf = first.line;
    let continued = trimContinuation(buf, escape);
    if (continued === void 0 && buf === "") continue;
    if (continued !== void 0) buf = continued;
    let emptyContinuation = false;
    while (continued !== void 0 && i < lines.length) {
      const rawNext = lines[i] ?? "";
      const nextNo = i + 1;
      i++;
      const { line } = processLine(rawNext, nextNo, false);
      if (isComment(rawNext)) continue;
      if (trimLeftSpace(line) === "") {
        emptyContinuation = true;
        continue;
      }
      continued = trimContinuation(line, escape);
      buf += continued ?? line;
    }
    let endLine = i;
    if (emptyContinuation) {
      const range2 = { start: { line: endLine, column: 1 }, end: { line: endLine, column: 1 } };
      const rule2 = RULES.NoEmptyContinuation;
      warnings.push({
        message: `Empty continuation line found in: ${buf}`,
        rule: rule2.name,
        range: range2,
        detail: `${rule2.description}; ${rule2.url}`
      });
    }
    let child;
    try {
      child = nodeFromLine(buf, { escape, depth: 0 }, comments);
    } catch (err) {
      if (err instanceof LineError) return fail2(err.message, startLine, endLine, err.hint);
      throw err;
    }
    if (buf.includes("<<") && canContainHeredoc(child)) {
      for (const doc of heredocsFromLine(buf)) {
        const body = readHeredocBody(lines, i, doc);
        i = body.next;
        endLine = i;
        if (!body.terminated) {
          fail2(
            `unterminated heredoc ${doc.name}`,
            startLine,
            endLine,
            `end the heredoc with a line containing only ${doc.name}`
          );
        }
        child.heredocs.push(doc);
      }
    }
    const last = trimNewline(lines[endLine - 1] ?? "");
    const range = {
      start: { line: startLine, column: startColumn },
      end: { line: endLine, column: last.length + 1 }
    };
    setRange(child, range);
    children.push(child);
    comments = [];
  }
  const firstChild = children[0];
  const lastChild = children[children.length - 1];
  if (!firstChild || !lastChild) {
    const at = Math.max(1, lines.length);
    return fail2("file with no instructions", at, at, "a Dockerfile needs at least a FROM instruction");
  }
  const ast = {
    children,
    range: { start: firstChild.range.start, end: lastChild.range.end }
  };
  return { ast, escapeToken: escape, warnings, directives: { ...directives.values } };
}
function setRange(top, range) {
  const stack = [top];
  while (stack.length > 0) {
    const n = stack.pop();
    if (!n) break;
    n.range = range;
    if (n.next) stack.push(n.next);
    stack.push(...n.children);
  }
}

// packages/dockerfile/src/dump.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/shell.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var ShellError = class extends TsbuildError {
  /** The word as written. */
  word;
  /** The reason without the word, e.g. `syntax error: missing '}'`. */
  detail;
  constructor(detail, word) {
    super("DOCKERFILE", `failed to process ${JSON.stringify(word)}: ${detail}`);
    this.word = word;
    this.detail = detail;
  }
};
function processWordWithMatches(word, env, opts = {}) {
  const lexer = new Lexer(word, env, opts);
  try {
    const { text, words: words2 } = lexer.run(void 0, false);
    return { result: text, words: words2, matched: lexer.matched, unmatched: lexer.unmatched };
  } catch (e) {
    if (e instanceof SyntaxFailure) throw new ShellError(e.message, word);
    throw e;
  }
}
function lookupEnv(env, name) {
  if (env instanceof Map) return env.get(name);
  const rec = env;
  return Object.hasOwn(rec, name) ? rec[name] : void 0;
}
var SyntaxFailure = class extends Error {
};
var EOF = "";
var GLOB_META = /* @__PURE__ */ new Set(["*", "?", "[", "]", "\\"]);
var Fields = class {
  word = "";
  inWord = false;
  words = [];
  addChar(ch) {
    if (isSpace2(ch)) {
      if (this.inWord && this.word.length > 0) {
        this.words.push(this.word);
        this.word = "";
        this.inWord = false;
      }
    } else {
      this.addRaw(ch);
    }
  }
  addRaw(s) {
    this.word += s;
    this.inWord = true;
  }
  addSplit(s) {
    for (const ch of s) this.addChar(ch);
  }
  finish() {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = "";
      this.inWord = false;
    }
    return this.words;
  }
};
function isSpace2(ch) {
  return /^\s$/u.test(ch);
}
var Lexer = class {
  constructor(word, env, opts) {
    this.env = env;
    this.chars = Array.from(word);
    this.escape = opts.escapeToken ?? "\\";
    this.skipUnset = opts.skipUnset ?? false;
    this.skipQuotes = opts.skipQuotes ?? false;
  }
  env;
  chars;
  pos = 0;
  escape;
  skipUnset;
  skipQuotes;
  /** True while reading a `#`, `%` or `/` pattern: literal characters come out glob-escaped. */
  pattern = false;
  matched = /* @__PURE__ */ new Set();
  unmatched = /* @__PURE__ */ new Set();
  peek() {
    return this.chars[this.pos] ?? EOF;
  }
  next() {
    const ch = this.chars[this.pos] ?? EOF;
    if (ch !== EOF) this.pos++;
    return ch;
  }
  /** A character that must match itself when it ends up in a glob pattern. */
  lit(ch) {
    return this.pattern && GLOB_META.has(ch) ? `\\${ch}` : ch;
  }
  litString(s) {
    if (!this.pattern) return s;
    let out = "";
    for (const ch of s) out += this.lit(ch);
    return out;
  }
  getEnv(name) {
    const v = lookupEnv(this.env, name);
    if (v === void 0) this.unmatched.add(name);
    else this.matched.add(name);
    return v;
  }
  /** Reads up to `stop` (consumed) or the end; `pattern` switches glob-escaping of literals on. */
  run(stop, pattern) {
    const saved = this.pattern;
    this.pattern = pattern;
    try {
      let text = "";
      const fields2 = new Fields();
      while (this.peek() !== EOF) {
        const ch = this.peek();
        if (stop !== void 0 && ch === stop) {
          this.next();
          return { text, words: fields2.finish() };
        }
        if (ch === "$") {
          const v = this.dollar();
          text += v;
          fields2.addSplit(v);
        } else if (!this.skipQuotes && ch === "'") {
          const v = this.singleQuote();
          text += v;
          fields2.addRaw(v);
        } else if (!this.skipQuotes && ch === '"') {
          const v = this.doubleQuote();
          text += v;
          fields2.addRaw(v);
        } else {
          this.next();
          if (ch === this.escape) {
            const escaped = this.next();
            if (escaped === EOF) break;
            const out = this.pattern ? `\\${escaped}` : escaped;
            text += out;
            fields2.addRaw(out);
          } else {
            const out = this.pattern && ch === "\\" ? "\\\\" : ch;
            text += out;
            fields2.addChar(out);
          }
        }
      }
      if (stop !== void 0) {
        throw new SyntaxFailure(`unexpected end of statement while looking for matching ${stop}`);
      }
      return { text, words: fields2.finish() };
    } finally {
      this.pattern = saved;
    }
  }
  singleQuote() {
    this.next();
    let out = "";
    for (; ; ) {
      const ch = this.next();
      if (ch === EOF) throw new SyntaxFailure("unexpected end of statement while looking for matching single-quote");
      if (ch === "'") return out;
      out += this.lit(ch);
    }
  }
  doubleQuote() {
    this.next();
    let out = "";
    for (; ; ) {
      const ch = this.peek();
      if (ch === EOF) throw new SyntaxFailure("unexpected end of statement while looking for matching double-quote");
      if (ch === '"') {
        this.next();
        return out;
      }
      if (ch === "$") {
        out += this.litString(this.dollar());
        continue;
      }
      this.next();
      if (ch === this.escape) {
        const after = this.peek();
        if (after === EOF) continue;
        if (after === '"' || after === "$" || after === this.escape) {
          out += this.lit(this.next());
          continue;
        }
      }
      out += this.lit(ch);
    }
  }
  dollar() {
    this.next();
    if (this.peek() !== "{") {
      const name2 = this.name();
      if (name2 === "") return "$";
      const v = this.getEnv(name2);
      if (v === void 0 && this.skipUnset) return `$${name2}`;
      return v ?? "";
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new SyntaxFailure("syntax error: missing '}'");
    if (first === "{" || first === "}" || first === ":") throw new SyntaxFailure("syntax error: bad substitution");
    const name = this.name();
    let op = this.next();
    if (op === EOF) throw new SyntaxFailure("syntax error: missing '}'");
    if (op === "}") {
      const v = this.getEnv(name);
      if (v === void 0 && this.skipUnset) return `\${${name}}`;
      return v ?? "";
    }
    if (name === "") throw new SyntaxFailure("syntax error: bad substitution");
    let colon = false;
    if (op === ":") {
      colon = true;
      op = this.next();
    }
    const modifier = (colon ? ":" : "") + op;
    if (op === "-" || op === "+" || op === "?" || op === "#" || op === "%") {
      const isPattern = op === "#" || op === "%";
      if (colon && isPattern) throw new SyntaxFailure(`unsupported modifier (${modifier}) in substitution`);
      const arg = this.argument("}", isPattern, "syntax error: missing '}'");
      const value = this.getEnv(name);
      if (value === void 0 && this.skipUnset) return `\${${name}${modifier}${arg}}`;
      const unset = value === void 0 || colon && value === "";
      switch (op) {
        case "-":
          return unset ? arg : value ?? "";
        case "+":
          return unset ? "" : arg;
        case "?":
          if (value === void 0) throw new SyntaxFailure(`${name}: ${arg || "is not allowed to be unset"}`);
          if (unset) throw new SyntaxFailure(`${name}: ${arg || "is not allowed to be empty"}`);
          return value;
        default: {
          let pat = arg;
          let longest = false;
          if (pat.startsWith(op)) {
            longest = true;
            pat = pat.slice(1);
          }
          const re = compileShellPattern(pat);
          return op === "#" ? trimPrefix(value ?? "", re, longest) : trimSuffix(value ?? "", re, longest);
        }
      }
    }
    if (op === "/" && !colon) {
      const all = this.peek() === "/";
      if (all) this.next();
      const pat = this.argument("/", true, "syntax error: missing '/' in ${}");
      const replacement = this.argument("}", false, "syntax error: missing '}'");
      const value = this.getEnv(name);
      if (value === void 0 && this.skipUnset) return `\${${name}/${all ? "/" : ""}${pat}/${replacement}}`;
      if (pat === "" || value === void 0) return value ?? "";
      return replaceShellPattern(value, compileShellPattern(pat), replacement, all);
    }
    throw new SyntaxFailure(`unsupported modifier (${modifier}) in substitution`);
  }
  argument(stop, pattern, eofMessage) {
    try {
      return this.run(stop, pattern).text;
    } catch (e) {
      if (e instanceof SyntaxFailure && this.peek() === EOF && e.message.startsWith("unexpected end")) {
        throw new SyntaxFailure(eofMessage);
      }
      throw e;
    }
  }
  /** A variable name: letters/digits/_; a run of digits (positional); or one special parameter. */
  name() {
    let name = "";
    for (; ; ) {
      const ch = this.peek();
      if (ch === EOF) return name;
      if (name === "" && new RegExp("^\\p{Nd}$", "u").test(ch)) {
        while (new RegExp("^\\p{Nd}$", "u").test(this.peek())) name += this.next();
        return name;
      }
      if (name === "" && "@*#?-$!0".includes(ch)) return this.next();
      if (!/^[\p{L}\p{Nd}_]$/u.test(ch)) return name;
      name += this.next();
    }
  }
};
function compileShellPattern(pattern) {
  const chars = Array.from(pattern);
  const code = (ch) => `\\u{${(ch.codePointAt(0) ?? 0).toString(16)}}`;
  let src = "";
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === "\\") {
      const n = chars[++i];
      src += n === void 0 ? code("\\") : code(n);
    } else if (ch === "*") {
      src += "[^]*";
    } else if (ch === "?") {
      src += "[^]";
    } else if (ch === "[") {
      const cls = readClass(chars, i, code);
      if (cls) {
        src += cls.src;
        i = cls.end;
      } else {
        src += code("[");
      }
    } else {
      src += code(ch);
    }
  }
  return new RegExp(`^(?:${src})$`, "u");
}
function readClass(chars, open6, code) {
  let i = open6 + 1;
  let negate = false;
  if (chars[i] === "!" || chars[i] === "^") {
    negate = true;
    i++;
  }
  const items = [];
  let first = true;
  for (; i < chars.length; i++) {
    let ch = chars[i];
    if (ch === "]" && !first) {
      if (items.length === 0) return void 0;
      return { src: `[${negate ? "^" : ""}${items.join("")}]`, end: i };
    }
    first = false;
    if (ch === "\\") {
      const n = chars[i + 1];
      if (n === void 0) return void 0;
      ch = n;
      i++;
    }
    if (chars[i + 1] === "-" && chars[i + 2] !== void 0 && chars[i + 2] !== "]") {
      let hi = chars[i + 2];
      let skip = 2;
      if (hi === "\\" && chars[i + 3] !== void 0) {
        hi = chars[i + 3];
        skip = 3;
      }
      if ((hi.codePointAt(0) ?? 0) < (ch.codePointAt(0) ?? 0)) return void 0;
      items.push(`${code(ch)}-${code(hi)}`);
      i += skip;
    } else {
      items.push(code(ch));
    }
  }
  return void 0;
}
function trimPrefix(value, re, longest) {
  const chars = Array.from(value);
  for (let k = 0; k <= chars.length; k++) {
    const i = longest ? chars.length - k : k;
    if (re.test(chars.slice(0, i).join(""))) return chars.slice(i).join("");
  }
  return value;
}
function trimSuffix(value, re, longest) {
  const chars = Array.from(value);
  for (let k = 0; k <= chars.length; k++) {
    const i = longest ? k : chars.length - k;
    if (re.test(chars.slice(i).join(""))) return chars.slice(0, i).join("");
  }
  return value;
}
function replaceShellPattern(value, re, replacement, all) {
  if (value === "") return re.test("") ? replacement : "";
  const chars = Array.from(value);
  let out = "";
  let start = 0;
  let replaced = false;
  while (start < chars.length) {
    let end = -1;
    if (!(replaced && !all)) {
      for (let e = chars.length; e > start; e--) {
        if (re.test(chars.slice(start, e).join(""))) {
          end = e;
          break;
        }
      }
    }
    if (end < 0) {
      out += chars[start];
      start++;
    } else {
      out += replacement;
      start = end;
      replaced = true;
    }
  }
  return out;
}

// packages/dockerfile/src/stages.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/instructions.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/duration.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var UNIT_NS = {
  ns: 1n,
  us: 1000n,
  "\xB5s": 1000n,
  "\u03BCs": 1000n,
  ms: 1000000n,
  s: 1000000000n,
  m: 60000000000n,
  h: 3600000000000n
};
var MAX_NS = BigInt(Number.MAX_SAFE_INTEGER);
function parseDuration(text) {
  const invalid2 = () => new DockerfileError(`invalid duration ${JSON.stringify(text)}`);
  let s = text;
  let negative = false;
  if (s.startsWith("-") || s.startsWith("+")) {
    negative = s[0] === "-";
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw invalid2();
  let total = 0n;
  const part = /^(\d*)(?:\.(\d*))?([^\d.]+)/u;
  while (s !== "") {
    const m = part.exec(s);
    if (!m) throw invalid2();
    const [whole, int = "", frac = "", unitText = ""] = m;
    if (int === "" && frac === "") throw invalid2();
    const unit = UNIT_NS[unitText];
    if (unit === void 0) {
      throw new DockerfileError(`invalid duration ${JSON.stringify(text)}: unknown unit ${JSON.stringify(unitText)}`);
    }
    let v = BigInt(int || "0") * unit;
    if (frac !== "") v += BigInt(frac) * unit / 10n ** BigInt(frac.length);
    total += v;
    if (total > MAX_NS) throw new DockerfileError(`duration ${JSON.stringify(text)} is too long`);
    s = s.slice(whole.length);
  }
  const n = Number(total);
  return negative ? -n : n;
}
function formatDuration(ns) {
  if (ns === 0) return "0s";
  const sign = ns < 0 ? "-" : "";
  let v = BigInt(Math.abs(ns));
  if (v < 1000000000n) {
    const [unit, div] = v < 1000n ? ["ns", 1n] : v < 1000000n ? ["\xB5s", 1000n] : ["ms", 1000000n];
    return sign + fraction(v, div) + unit;
  }
  const h = v / 3600000000000n;
  v %= 3600000000000n;
  const m = v / 60000000000n;
  v %= 60000000000n;
  let out = sign;
  if (h > 0n) out += `${h}h`;
  if (h > 0n || m > 0n) out += `${m}m`;
  return `${out}${fraction(v, 1000000000n)}s`;
}
function fraction(v, div) {
  const int = v / div;
  const rest = v % div;
  if (rest === 0n) return `${int}`;
  const digits = div.toString().length - 1;
  return `${int}.${rest.toString().padStart(digits, "0").replace(/0+$/, "")}`;
}

// packages/dockerfile/src/flags.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function parseFlags(raw, spec, instruction) {
  const out = { strings: /* @__PURE__ */ new Map(), lists: /* @__PURE__ */ new Map(), bools: /* @__PURE__ */ new Map() };
  for (const arg of raw) {
    if (!arg.startsWith("--") || arg === "--") {
      throw new DockerfileError(`${instruction}: invalid flag ${JSON.stringify(arg)}: flags must start with --`);
    }
    const body = arg.slice(2);
    const eq = body.indexOf("=");
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? void 0 : body.slice(eq + 1);
    const kind2 = Object.hasOwn(spec, name) ? spec[name] : void 0;
    if (kind2 === void 0) {
      const known2 = Object.keys(spec).map((k) => `--${k}`);
      throw new DockerfileError(`${instruction}: unknown flag: --${name}`, {
        hint: known2.length ? `${instruction} accepts ${known2.join(", ")}` : `${instruction} accepts no flags`
      });
    }
    if (kind2 === "bool") {
      if (out.bools.has(name)) throw new DockerfileError(`${instruction}: duplicate flag specified: --${name}`);
      let v = true;
      if (value !== void 0) {
        const lower = value.toLowerCase();
        if (lower !== "true" && lower !== "false") {
          throw new DockerfileError(`${instruction}: expecting boolean value for flag --${name}, not: ${value}`);
        }
        v = lower === "true";
      }
      out.bools.set(name, v);
      continue;
    }
    if (value === void 0) throw new DockerfileError(`${instruction}: missing a value on flag: --${name}`);
    if (kind2 === "list") {
      const list = out.lists.get(name) ?? [];
      list.push(value);
      out.lists.set(name, list);
    } else {
      if (out.strings.has(name)) throw new DockerfileError(`${instruction}: duplicate flag specified: --${name}`);
      out.strings.set(name, value);
    }
  }
  return out;
}

// packages/dockerfile/src/mount.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var TYPES2 = ["bind", "cache", "tmpfs", "secret", "ssh"];
var SHARING = ["shared", "private", "locked"];
function parseMount(spec, opts = {}) {
  const fail2 = (msg) => new DockerfileError(`--mount=${spec}: ${msg}`);
  const fields2 = parseCsvRecord(spec, fail2);
  const values = /* @__PURE__ */ new Map();
  for (const field of fields2) {
    const eq = field.indexOf("=");
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    let value = eq < 0 ? void 0 : field.slice(eq + 1);
    const canon = CANONICAL[key];
    if (canon === void 0) throw fail2(`unexpected key '${key}' in '${field}'`);
    if (value === void 0 && !FLAG_KEYS.has(canon)) throw fail2(`invalid field '${field}' must be a key=value pair`);
    if (canon === "from" && value !== void 0 && /\$(?!$)/.test(value)) {
      throw fail2("'from' doesn't support variable expansion, define alias stage instead");
    }
    if (value !== void 0 && opts.expand) value = opts.expand(value);
    if ((canon === "readonly" || canon === "readwrite") && values.has(canon === "readonly" ? "readwrite" : "readonly")) {
      values.delete(canon === "readonly" ? "readwrite" : "readonly");
    }
    values.set(canon, { key, value });
  }
  const ready = (v) => opts.expand !== void 0 || !v.includes("$");
  const text = (k) => values.get(k)?.value;
  let type = "bind";
  const typeText = text("type");
  const typeKnown = typeText === void 0 || ready(typeText);
  if (typeText !== void 0 && typeKnown) {
    const t = typeText.toLowerCase();
    if (!TYPES2.includes(t)) {
      throw fail2(`unsupported mount type ${JSON.stringify(typeText)} (use one of ${TYPES2.join(", ")})`);
    }
    type = t;
  }
  const m = { type, readonly: type === "bind" || type === "secret" || type === "ssh", required: false, spec };
  const boolOf = (k) => {
    const entry = values.get(k);
    if (!entry) return void 0;
    if (entry.value === void 0) return true;
    if (!ready(entry.value)) return void 0;
    const b = parseGoBool(entry.value);
    if (b === void 0) throw fail2(`invalid value for ${entry.key}: ${entry.value}`);
    return b;
  };
  const ro = boolOf("readonly");
  const rw = boolOf("readwrite");
  if (ro !== void 0) m.readonly = ro;
  if (rw !== void 0) m.readonly = !rw;
  const str2 = (k) => {
    const v = text(k);
    if (v !== void 0) m[k] = v;
  };
  str2("target");
  str2("source");
  str2("from");
  str2("id");
  str2("env");
  if (!typeKnown) return m;
  const onlyFor = (k, allowed) => {
    const entry = values.get(k);
    if (!entry) return false;
    if (!allowed.includes(type)) throw fail2(`unexpected key '${entry.key}' for mount type '${type}'`);
    return true;
  };
  if (onlyFor("required", ["secret", "ssh"])) m.required = boolOf("required") ?? false;
  if (onlyFor("size", ["tmpfs"])) {
    const v = text("size");
    if (ready(v)) m.size = parseByteSize(v, fail2);
  }
  if (values.has("sharing")) {
    if (type !== "cache") throw fail2(`invalid cache sharing set for ${type} mount`);
    const v = text("sharing");
    if (ready(v)) {
      const s = v.toLowerCase();
      if (!SHARING.includes(s)) {
        throw fail2(`unsupported sharing value ${JSON.stringify(v)} (use one of ${SHARING.join(", ")})`);
      }
      m.sharing = s;
    }
  }
  for (const k of ["mode", "uid", "gid"]) {
    const v = text(k);
    if (v === void 0) continue;
    if (type !== "cache" && type !== "secret" && type !== "ssh") throw fail2(`${k} not allowed for "${type}" type mounts`);
    if (!ready(v)) continue;
    const n = k === "mode" ? parseUnsigned(v, 8) : parseUnsigned(v, 10);
    if (n === void 0) throw fail2(`invalid value ${v} for ${k}`);
    m[k] = n;
  }
  if (values.has("env") && type !== "secret") throw fail2(`unexpected key 'env' for mount type '${type}'`);
  switch (type) {
    case "bind":
    case "tmpfs":
      if (!m.target) throw fail2(`mount type ${type} requires a target`);
      break;
    case "cache":
      if (!m.target) throw fail2("mount type cache requires a target");
      if (m.id === void 0 || m.id === "") m.id = m.target;
      if (!values.has("sharing")) m.sharing = "shared";
      break;
    case "secret": {
      if (m.from !== void 0) throw fail2("secret mount should not have a from");
      if (m.source && m.id) throw fail2("both source and id can't be set");
      const id = m.id || m.source || (m.target ? basename3(m.target) : "");
      if (!id) throw fail2("invalid secret mount: one of id, source or target is required");
      m.id = id;
      delete m.source;
      if (!m.target && m.env === void 0) m.target = `/run/secrets/${basename3(id)}`;
      break;
    }
    case "ssh":
      if (m.from !== void 0) throw fail2("ssh mount should not have a from");
      if (!m.id) m.id = "default";
      break;
  }
  return m;
}
var CANONICAL = Object.assign(/* @__PURE__ */ Object.create(null), {
  type: "type",
  target: "target",
  dst: "target",
  destination: "target",
  dest: "target",
  source: "source",
  src: "source",
  from: "from",
  id: "id",
  sharing: "sharing",
  mode: "mode",
  uid: "uid",
  gid: "gid",
  ro: "readonly",
  readonly: "readonly",
  rw: "readwrite",
  readwrite: "readwrite",
  required: "required",
  size: "size",
  env: "env"
});
var FLAG_KEYS = /* @__PURE__ */ new Set(["readonly", "readwrite", "required"]);
function basename3(p) {
  const parts = p.split("/").filter((s) => s !== "");
  return parts[parts.length - 1] ?? "/";
}
function parseGoBool(v) {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(v)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(v)) return false;
  return void 0;
}
function parseUnsigned(v, radix) {
  const re = radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(v)) return void 0;
  const n = parseInt(v, radix);
  return n <= 4294967295 ? n : void 0;
}
function parseByteSize(v, fail2) {
  const m = /^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$/i.exec(v);
  if (!m) throw fail2(`invalid value for size: ${v}`);
  const mult = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[(m[2] ?? "").toLowerCase()] ?? 1;
  const n = Math.floor(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n)) throw fail2(`invalid value for size: ${v}`);
  return n;
}
function parseCsvRecord(text, fail2 = (m) => new DockerfileError(m)) {
  const fields2 = [];
  let i = 0;
  for (; ; ) {
    let field = "";
    if (text[i] === '"') {
      i++;
      for (; ; ) {
        if (i >= text.length) throw fail2('failed to parse csv mounts: extraneous or missing " in quoted-field');
        const ch = text[i];
        if (ch === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          if (i < text.length && text[i] !== ",") {
            throw fail2('failed to parse csv mounts: extraneous or missing " in quoted-field');
          }
          break;
        }
        field += ch;
        i++;
      }
    } else {
      while (i < text.length && text[i] !== ",") {
        if (text[i] === '"') throw fail2('failed to parse csv mounts: bare " in non-quoted-field');
        field += text[i];
        i++;
      }
    }
    fields2.push(field);
    if (i >= text.length) return fields2;
    i++;
  }
}

// packages/dockerfile/src/instructions.ts
function parseInstruction(node2, opts = {}) {
  try {
    return convert(node2, opts);
  } catch (e) {
    throw locate(e, node2.range, node2.original, opts);
  }
}
function locate(e, range, original, opts) {
  if (!(e instanceof DockerfileError) || e.range !== void 0) return e;
  const options = {
    file: opts.file ?? "Dockerfile",
    range,
    excerpt: opts.text !== void 0 ? excerptOf(opts.text, range) : original,
    cause: e.cause
  };
  if (e.hint !== void 0) options.hint = e.hint;
  return new DockerfileError(e.detail, options);
}
var COPY_FLAGS = { chown: "string", chmod: "string", link: "bool", parents: "bool", exclude: "list" };
function instructionKeyword(original, fallback = "") {
  return /^\s*(\S+)/.exec(original)?.[1] ?? fallback;
}
function convert(node2, opts) {
  const base = { range: node2.range, original: node2.original };
  const kw = node2.value.toLowerCase();
  const name = kw.toUpperCase();
  const written = instructionKeyword(node2.original, name);
  const args = argsOf(node2);
  const flags = (spec) => parseFlags(node2.flags, spec, name);
  const warn = (rule2, message) => {
    opts.warnings?.push({ rule: rule2, message, range: node2.range });
  };
  const exactlyOne = () => {
    if (args.length !== 1) throw new DockerfileError(`${name} requires exactly one argument`);
    return args[0];
  };
  const atLeastOne = () => {
    if (args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
  };
  switch (kw) {
    case "from": {
      const f = flags({ platform: "string" });
      const out = { kind: "from", ...base, image: "" };
      if (args.length === 3 && args[1].toLowerCase() === "as") {
        const stage = args[2];
        if (stage !== stage.toLowerCase()) warn(RULES.StageNameCasing.name, RULES.StageNameCasing.format(stage));
        const asWord = args[1];
        const fromLower = written === written.toLowerCase();
        const fromUpper = written === written.toUpperCase();
        if (fromLower && asWord !== asWord.toLowerCase() || !fromLower && fromUpper && asWord !== asWord.toUpperCase()) {
          warn(RULES.FromAsCasing.name, RULES.FromAsCasing.format(written, asWord));
        }
        if (!/^[a-z][a-z0-9\-_.]*$/.test(stage.toLowerCase())) {
          throw new DockerfileError(
            `invalid name for build stage: ${JSON.stringify(stage)}, name can't start with a number or contain symbols`
          );
        }
        out.stageName = stage.toLowerCase();
      } else if (args.length !== 1) {
        throw new DockerfileError("FROM requires either one or three arguments (FROM image [AS name])");
      }
      out.image = args[0];
      if (out.image === "") throw new DockerfileError("FROM requires an image name");
      const platform = f.strings.get("platform");
      if (platform !== void 0) out.platform = platform;
      return out;
    }
    case "run": {
      const f = flags({ mount: "list", network: "string", security: "string" });
      if (args.length === 0 && node2.heredocs.length === 0) {
        throw new DockerfileError("RUN requires at least one argument");
      }
      const out = {
        kind: "run",
        ...base,
        cmd: commandLine(node2, args),
        heredocs: node2.heredocs.map((h) => ({ ...h })),
        mounts: runMounts(f.lists.get("mount") ?? [])
      };
      const network = f.strings.get("network");
      if (network !== void 0) {
        if (network !== "default" && network !== "none" && network !== "host") {
          throw new DockerfileError(`RUN --network: unsupported network mode ${JSON.stringify(network)} (use default, none or host)`);
        }
        out.network = network;
      }
      const security = f.strings.get("security");
      if (security !== void 0) {
        if (security !== "sandbox" && security !== "insecure") {
          throw new DockerfileError(`RUN --security: unsupported value ${JSON.stringify(security)} (use sandbox or insecure)`);
        }
        out.security = security;
      }
      return out;
    }
    case "cmd":
    case "entrypoint": {
      flags({});
      if (!node2.attributes.json && args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
      return { kind: kw, ...base, cmd: commandLine(node2, args) };
    }
    case "env":
    case "label": {
      flags({});
      const pairs = keyValues(args, name, written, warn);
      return kw === "env" ? { kind: "env", ...base, env: pairs } : { kind: "label", ...base, labels: pairs };
    }
    case "maintainer":
      flags({});
      warn(RULES.MaintainerDeprecated.name, RULES.MaintainerDeprecated.format());
      return { kind: "maintainer", ...base, maintainer: exactlyOne() };
    case "expose":
      flags({});
      atLeastOne();
      return { kind: "expose", ...base, ports: args };
    case "add":
    case "copy": {
      const f = kw === "copy" ? flags({ ...COPY_FLAGS, from: "string" }) : flags({ ...COPY_FLAGS, checksum: "string", "keep-git-dir": "bool", unpack: "bool" });
      return copyLike(kw, base, node2, args, f);
    }
    case "volume": {
      flags({});
      atLeastOne();
      for (const v of args) if (v.trim() === "") throw new DockerfileError("VOLUME specified can not be an empty string");
      return { kind: "volume", ...base, volumes: args };
    }
    case "user":
      flags({});
      return { kind: "user", ...base, user: exactlyOne() };
    case "workdir":
      flags({});
      return { kind: "workdir", ...base, path: exactlyOne() };
    case "stopsignal":
      flags({});
      return { kind: "stopsignal", ...base, signal: exactlyOne() };
    case "arg": {
      flags({});
      atLeastOne();
      const defs = args.map((a) => {
        const eq = a.indexOf("=");
        if (eq < 0) return { key: a };
        if (eq === 0) throw new DockerfileError("ARG names can not be blank");
        return { key: a.slice(0, eq), value: a.slice(eq + 1) };
      });
      return { kind: "arg", ...base, args: defs };
    }
    case "onbuild":
      flags({});
      return onbuild(node2, base, opts);
    case "healthcheck":
      return healthcheck(node2, base, args);
    case "shell": {
      flags({});
      if (!node2.attributes.json) throw new DockerfileError("SHELL requires the arguments to be in JSON form");
      if (args.length === 0) throw new DockerfileError("SHELL requires at least one argument");
      return { kind: "shell", ...base, shell: args };
    }
    default: {
      throw new DockerfileError(`unknown instruction: ${instructionKeyword(node2.original, node2.value).toUpperCase()}`);
    }
  }
}
function argsOf(node2) {
  const out = [];
  for (let n = node2.next; n; n = n.next) out.push(n.value);
  return out;
}
function commandLine(node2, args) {
  if (node2.attributes.json) return { form: "exec", args };
  return { form: "shell", command: args.join(" ") };
}
function runMounts(specs) {
  const mounts = specs.map((s) => parseMount(s));
  let ssh = 0;
  for (const m of mounts) {
    if (m.type !== "ssh") continue;
    if (!m.target) m.target = `/run/buildkit/ssh_agent.${ssh}`;
    ssh++;
  }
  return mounts;
}
function keyValues(args, name, written, warn) {
  if (args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
  if (args.length % 3 !== 0) throw new DockerfileError(`${name}: malformed key-value arguments`);
  const out = [];
  for (let i = 0; i < args.length; i += 3) {
    const key = args[i];
    if (key === "") throw new DockerfileError(`${name} names can not be blank`);
    if (args[i + 2] === "") warn(RULES.LegacyKeyValueFormat.name, RULES.LegacyKeyValueFormat.format(written));
    out.push({ key, value: args[i + 1] });
  }
  return out;
}
var HEREDOC_WORD = /^<<(-?)\s*(["']?)([^<"']*)\2$/;
function copyLike(kind2, base, node2, args, f) {
  const name = kind2.toUpperCase();
  if (args.length < 2) {
    throw new DockerfileError(
      `${name} requires at least two arguments, but ${args.length === 0 ? "none were" : "only one was"} provided. Destination could not be determined`
    );
  }
  const dest = args[args.length - 1];
  if (node2.heredocs.length > 0 && HEREDOC_WORD.test(dest)) {
    throw new DockerfileError(`${name} cannot accept a heredoc as a destination`);
  }
  const sources = [];
  const heredocs = [];
  for (const src of args.slice(0, -1)) {
    const m = node2.heredocs.length > 0 ? HEREDOC_WORD.exec(src) : null;
    const doc = m ? node2.heredocs.find((h) => h.name === m[3]) : void 0;
    if (doc) heredocs.push({ ...doc });
    else sources.push(src);
  }
  const common = {
    ...base,
    sources,
    heredocs,
    dest,
    link: f.bools.get("link") ?? false,
    parents: f.bools.get("parents") ?? false,
    exclude: f.lists.get("exclude") ?? []
  };
  const chown4 = f.strings.get("chown");
  if (chown4 !== void 0) common.chown = chown4;
  const chmod3 = f.strings.get("chmod");
  if (chmod3 !== void 0) {
    checkChmod(chmod3);
    common.chmod = chmod3;
  }
  if (kind2 === "copy") {
    const out2 = { kind: "copy", ...common };
    const from = f.strings.get("from");
    if (from !== void 0) out2.from = from;
    return out2;
  }
  const out = { kind: "add", ...common };
  const checksum = f.strings.get("checksum");
  if (checksum !== void 0) {
    if (!checksum.includes("$") && !/^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$/.test(checksum)) {
      throw new DockerfileError(`ADD --checksum: invalid checksum ${JSON.stringify(checksum)} (expected sha256:<64 hex digits>)`);
    }
    if (sources.length !== 1 || heredocs.length !== 0) {
      throw new DockerfileError("ADD --checksum requires exactly one source");
    }
    const src = sources[0];
    if (!src.includes("$") && !/^(https?:\/\/|git@|git:\/\/)/.test(src)) {
      throw new DockerfileError("ADD --checksum can only be used with an HTTP(S) or Git source");
    }
    out.checksum = checksum;
  }
  const keep = f.bools.get("keep-git-dir");
  if (keep !== void 0) out.keepGitDir = keep;
  const unpack = f.bools.get("unpack");
  if (unpack !== void 0) out.unpack = unpack;
  return out;
}
function checkChmod(chmod3) {
  if (chmod3.includes("$")) return;
  const clause = "[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+";
  if (!/^[0-7]{1,4}$/.test(chmod3) && !new RegExp(`^${clause}(?:,${clause})*$`).test(chmod3)) {
    throw new DockerfileError(`invalid --chmod value ${JSON.stringify(chmod3)}: expected an octal mode such as 0755 or symbolic clauses such as u+x,g-w`);
  }
}
function onbuild(node2, base, opts) {
  const triggerNode = node2.next?.children[0];
  if (!triggerNode) throw new DockerfileError("ONBUILD requires at least one argument");
  const trigger = triggerNode.value.toUpperCase();
  if (trigger === "ONBUILD") throw new DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger === "FROM" || trigger === "MAINTAINER") {
    throw new DockerfileError(`${trigger} isn't allowed as an ONBUILD trigger`);
  }
  const located = {
    ...triggerNode,
    range: node2.range,
    original: triggerNode.original || node2.original,
    heredocs: triggerNode.heredocs.length ? triggerNode.heredocs : node2.heredocs
  };
  const parsed = convert(located, { ...opts, warnings: void 0 });
  let expression = node2.original.replace(/^\s*ONBUILD\s*/i, "");
  for (const h of triggerNode.heredocs.length ? triggerNode.heredocs : node2.heredocs) {
    if (!expression.includes(`
${h.content}${h.name}`)) expression += `
${h.content}${h.name}`;
  }
  return { kind: "onbuild", ...base, trigger: parsed, expression };
}
function healthcheck(node2, base, args) {
  if (args.length === 0) throw new DockerfileError("HEALTHCHECK requires at least one argument");
  const type = args[0].toUpperCase();
  const rest = args.slice(1);
  const f = parseFlags(
    node2.flags,
    { interval: "string", timeout: "string", "start-period": "string", "start-interval": "string", retries: "string" },
    "HEALTHCHECK"
  );
  if (type === "NONE") {
    if (rest.length !== 0) throw new DockerfileError("HEALTHCHECK NONE takes no arguments");
    if (node2.flags.length !== 0) throw new DockerfileError("HEALTHCHECK NONE takes no flags");
    return { kind: "healthcheck", ...base, test: { type: "none" } };
  }
  if (type !== "CMD") throw new DockerfileError(`Unknown type ${JSON.stringify(type)} in HEALTHCHECK (try CMD)`);
  if (rest.length === 0) throw new DockerfileError("Missing command after HEALTHCHECK CMD");
  const out = { kind: "healthcheck", ...base, test: { type: "cmd", cmd: commandLine(node2, rest) } };
  const durations = [
    ["interval", "interval"],
    ["timeout", "timeout"],
    ["start-period", "startPeriod"],
    ["start-interval", "startInterval"]
  ];
  for (const [flag, field] of durations) {
    const text = f.strings.get(flag);
    if (text === void 0) continue;
    let ns;
    try {
      ns = parseDuration(text);
    } catch (e) {
      throw new DockerfileError(`HEALTHCHECK --${flag}: ${e.detail}`);
    }
    if (ns !== 0 && ns < 1e6) throw new DockerfileError(`HEALTHCHECK --${flag} cannot be less than 1ms (got ${text})`);
    out[field] = ns;
  }
  const retries = f.strings.get("retries");
  if (retries !== void 0) {
    if (!/^[+-]?\d+$/.test(retries) || Math.abs(Number(retries)) > 2 ** 31 - 1) {
      throw new DockerfileError(`HEALTHCHECK --retries: invalid number ${JSON.stringify(retries)}`);
    }
    const n = Number(retries);
    if (n < 0) throw new DockerfileError(`HEALTHCHECK --retries cannot be negative (${n})`);
    out.retries = n;
  }
  return out;
}

// packages/dockerfile/src/lint/sequence.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function childSequenceState(base) {
  return { shell: base?.shell ?? false };
}
function sequenceStep(inst, state, emit) {
  switch (inst.kind) {
    case "shell":
      state.shell = true;
      return;
    case "cmd":
    case "entrypoint":
    case "healthcheck": {
      const keyword = instructionKeyword(inst.original, inst.kind.toUpperCase());
      const previous = state[inst.kind];
      if (previous) {
        const r = RULES.MultipleInstructionsDisallowed;
        emit({ rule: r.name, message: r.format(keyword), range: previous.range }, inst);
      }
      state[inst.kind] = inst;
      if (inst.kind !== "healthcheck" && inst.cmd.form === "shell" && !state.shell) {
        const r = RULES.JSONArgsRecommended;
        emit({ rule: r.name, message: r.format(keyword), range: inst.range }, inst);
      }
      return;
    }
    default:
      return;
  }
}

// packages/dockerfile/src/stages.ts
function stagesFromAst(result, opts = {}) {
  const file = opts.file ?? "Dockerfile";
  const warnings = [...result.warnings];
  const ctx = opts.text === void 0 ? { file, warnings } : { file, text: opts.text, warnings };
  const fail2 = (message, range, original, hint) => {
    const options = {
      file,
      range,
      excerpt: opts.text !== void 0 ? excerptOf(opts.text, range) : original
    };
    if (hint !== void 0) options.hint = hint;
    throw new DockerfileError(message, options);
  };
  const children = result.ast.children;
  if (children.length === 0) {
    fail2("the Dockerfile has no instructions", result.ast.range, "", "a Dockerfile starts with FROM <image>");
  }
  const stages = [];
  const globalArgs3 = [];
  const names2 = /* @__PURE__ */ new Map();
  for (const node2 of children) {
    const inst = parseInstruction(node2, ctx);
    if (inst.kind === "from") {
      if (inst.stageName !== void 0) {
        const previous = names2.get(inst.stageName);
        if (previous) {
          fail2(
            `duplicate stage name ${JSON.stringify(inst.stageName)} (first defined on line ${previous.range.start.line})`,
            inst.range,
            inst.original
          );
        }
        names2.set(inst.stageName, inst);
      }
      const stage = { index: stages.length, from: inst, instructions: [], range: inst.range };
      if (inst.stageName !== void 0) stage.name = inst.stageName;
      stages.push(stage);
      continue;
    }
    const current = stages[stages.length - 1];
    if (!current) {
      if (inst.kind === "arg") {
        globalArgs3.push(inst);
        continue;
      }
      fail2(
        `no FROM before ${inst.kind.toUpperCase()}: only ARG may come before the first FROM (no build stage in current context)`,
        inst.range,
        inst.original,
        "start the build stage with FROM <image>"
      );
      continue;
    }
    current.instructions.push(inst);
    current.range = { start: current.range.start, end: inst.range.end };
  }
  if (stages.length === 0) {
    const last = children[children.length - 1];
    fail2("no FROM instruction: the Dockerfile defines no build stage", last?.range ?? result.ast.range, last?.original ?? "", "add FROM <image>");
  }
  lintStages(stages, warnings);
  return { stages, globalArgs: globalArgs3, warnings, escapeToken: result.escapeToken, directives: { ...result.directives } };
}
function lintStages(stages, warnings) {
  const finalState = /* @__PURE__ */ new Map();
  for (const stage of stages) {
    const state = childSequenceState(finalState.get(stage.from.image));
    for (const inst of stage.instructions) sequenceStep(inst, state, (w) => warnings.push(w));
    if (stage.name !== void 0) finalState.set(stage.name, state);
  }
}

// packages/dockerfile/src/expand.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function envExpander(env, opts = {}) {
  const matched = /* @__PURE__ */ new Set();
  const unmatched = /* @__PURE__ */ new Set();
  const run3 = (w, o) => {
    const r = processWordWithMatches(w, env, o);
    for (const n of r.matched) matched.add(n);
    for (const n of r.unmatched) unmatched.add(n);
    return r;
  };
  return {
    matched,
    unmatched,
    word: (w) => run3(w, opts).result,
    words: (w) => run3(w, opts).words,
    heredoc: (body) => run3(body, { ...opts, skipQuotes: true }).result
  };
}
function expandInstruction(inst, ex, opts = {}) {
  try {
    return expand(inst, ex);
  } catch (e) {
    const err = e instanceof ShellError ? new DockerfileError(e.message, { cause: e }) : e;
    throw locate(err, inst.range, inst.original, opts);
  }
}
function expand(inst, ex) {
  const kv = (list) => list.map((p) => ({ key: ex.word(p.key), value: ex.word(p.value) }));
  const i = inst;
  switch (i.kind) {
    case "from": {
      const out = { ...i, image: ex.word(i.image) };
      if (i.platform !== void 0) out.platform = ex.word(i.platform);
      return out;
    }
    case "env":
      return { ...i, env: kv(i.env) };
    case "label":
      return { ...i, labels: kv(i.labels) };
    case "arg":
      return {
        ...i,
        args: i.args.map((a) => a.value === void 0 ? { key: ex.word(a.key) } : { key: ex.word(a.key), value: ex.word(a.value) })
      };
    case "expose":
      return { ...i, ports: i.ports.flatMap((p) => ex.words(p)) };
    case "volume":
      return { ...i, volumes: i.volumes.map((v) => ex.word(v)) };
    case "user":
      return { ...i, user: ex.word(i.user) };
    case "workdir":
      return { ...i, path: ex.word(i.path) };
    case "stopsignal":
      return { ...i, signal: ex.word(i.signal) };
    case "copy":
    case "add": {
      const out = {
        ...i,
        sources: i.sources.map((s) => ex.word(s)),
        dest: ex.word(i.dest),
        exclude: i.exclude.map((s) => ex.word(s)),
        heredocs: i.heredocs.map((h) => h.expand ? { ...h, content: ex.heredoc(h.content) } : { ...h })
      };
      if (out.chown !== void 0) out.chown = ex.word(out.chown);
      if (out.chmod !== void 0) {
        out.chmod = ex.word(out.chmod);
        checkChmod(out.chmod);
        if (out.chmod.includes("$")) {
          throw new DockerfileError(`invalid --chmod value ${JSON.stringify(out.chmod)}: expected an octal mode such as 0755`);
        }
      }
      if (out.kind === "copy" && out.from !== void 0) out.from = ex.word(out.from);
      if (out.kind === "add" && out.checksum !== void 0) out.checksum = ex.word(out.checksum);
      return out;
    }
    case "run": {
      let ssh = 0;
      const mounts = i.mounts.map((m) => {
        const e = parseMount(m.spec, { expand: (w) => ex.word(w) });
        if (e.type === "ssh" && !e.target) e.target = `/run/buildkit/ssh_agent.${ssh}`;
        if (e.type === "ssh") ssh++;
        return e;
      });
      return { ...i, mounts };
    }
    default:
      return inst;
  }
}

// packages/dockerfile/src/lint/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/lint/check.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/lint/dispatch.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/lint/platform.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var OS_RE = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)((?:\+[A-Za-z0-9_.-]+)*)\))?$/;
var COMPONENT_RE3 = /^[A-Za-z0-9_.-]+$/;
var KNOWN_OS = /* @__PURE__ */ new Set([
  "aix",
  "android",
  "darwin",
  "dragonfly",
  "freebsd",
  "hurd",
  "illumos",
  "ios",
  "js",
  "linux",
  "nacl",
  "netbsd",
  "openbsd",
  "plan9",
  "solaris",
  "windows",
  "zos"
]);
var KNOWN_ARCH = /* @__PURE__ */ new Set([
  "386",
  "amd64",
  "amd64p32",
  "arm",
  "armbe",
  "arm64",
  "arm64be",
  "ppc64",
  "ppc64le",
  "loong64",
  "mips",
  "mipsle",
  "mips64",
  "mips64le",
  "mips64p32",
  "mips64p32le",
  "ppc",
  "riscv",
  "riscv64",
  "s390",
  "s390x",
  "sparc",
  "sparc64",
  "wasm"
]);
var DEFAULT_OS = "linux";
var DEFAULT_ARCH = "amd64";
function normalizeOS(os2) {
  const lower = os2.toLowerCase();
  return lower === "macos" ? "darwin" : lower;
}
function normalizeArch(arch, variant) {
  const a = arch.toLowerCase();
  const v = variant.toLowerCase();
  switch (a) {
    case "i386":
      return ["386", ""];
    case "x86_64":
    case "x86-64":
    case "amd64":
      return ["amd64", v === "v1" ? "" : v];
    case "aarch64":
    case "arm64":
      if (v === "8" || v === "v8" || v === "v8.0") return ["arm64", ""];
      if (v === "9" || v === "9.0" || v === "v9.0") return ["arm64", "v9"];
      return ["arm64", v];
    case "armhf":
      return ["arm", "v7"];
    case "armel":
      return ["arm", "v6"];
    case "arm":
      if (v === "" || v === "7") return ["arm", "v7"];
      if (v === "5" || v === "6" || v === "8") return ["arm", `v${v}`];
      return ["arm", v];
    default:
      return [a, v];
  }
}
function parsePlatformSpec(spec) {
  if (spec.includes("*")) return void 0;
  const parts = spec.split("/");
  if (parts.length > 3) return void 0;
  const m = OS_RE.exec(parts[0] ?? "");
  if (!m) return void 0;
  for (const part of parts.slice(1)) if (!COMPONENT_RE3.test(part)) return void 0;
  const os2 = normalizeOS(m[1] ?? "");
  if (parts.length === 1) {
    if (KNOWN_OS.has(os2)) return { os: os2, architecture: DEFAULT_ARCH, variant: "" };
    const [architecture2, variant2] = normalizeArch(parts[0] ?? "", "");
    if (!KNOWN_ARCH.has(architecture2)) return void 0;
    return { os: DEFAULT_OS, architecture: architecture2, variant: architecture2 === "arm" && variant2 === "v7" ? "" : variant2 };
  }
  if (parts.length === 2) {
    const [architecture2, variant2] = normalizeArch(parts[1] ?? "", "");
    return { os: os2, architecture: architecture2, variant: architecture2 === "arm" && variant2 === "v7" ? "" : variant2 };
  }
  const [architecture, variant] = normalizeArch(parts[1] ?? "", parts[2] ?? "");
  return { os: os2, architecture, variant: architecture === "arm64" && variant === "" ? "v8" : variant };
}
function format(p) {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}
function predefinedArgs(target2, build2, targetStage) {
  return /* @__PURE__ */ new Map([
    ["BUILDPLATFORM", format(build2)],
    ["BUILDOS", build2.os],
    ["BUILDOSVERSION", ""],
    ["BUILDARCH", build2.architecture],
    ["BUILDVARIANT", build2.variant],
    ["TARGETPLATFORM", format(target2)],
    ["TARGETOS", target2.os],
    ["TARGETOSVERSION", ""],
    ["TARGETARCH", target2.architecture],
    ["TARGETVARIANT", target2.variant],
    ["TARGETSTAGE", targetStage]
  ]);
}
var DEFAULT_PLATFORM = { os: DEFAULT_OS, architecture: DEFAULT_ARCH, variant: "" };

// packages/dockerfile/src/lint/reference.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var ALNUM = "[a-z0-9]+";
var SEPARATOR = "(?:[._]|__|[-]+)";
var PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
var DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
var DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
var IPV6 = "\\[(?:[a-fA-F0-9:]+)\\]";
var DOMAIN = `(?:${DOMAIN_NAME}|${IPV6})(?::[0-9]+)?`;
var NAME = `(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`;
var TAG = "[\\w][\\w.-]{0,127}";
var DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
var REFERENCE = new RegExp(`^(${NAME})(?::${TAG})?(?:@(${DIGEST}))?$`);
var IDENTIFIER = /^[a-f0-9]{64}$/;
var NAME_TOTAL_LENGTH_MAX = 255;
var DIGEST_HEX_LENGTH = { sha256: 64, sha384: 96, sha512: 128 };
function normalize(name) {
  const slash = name.indexOf("/");
  let domain;
  let remainder;
  const first = slash < 0 ? "" : name.slice(0, slash);
  if (slash < 0 || !/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first) {
    domain = "docker.io";
    remainder = name;
  } else {
    domain = first;
    remainder = name.slice(slash + 1);
  }
  if (domain === "index.docker.io") domain = "docker.io";
  if (domain === "docker.io" && !remainder.includes("/")) remainder = `library/${remainder}`;
  if (remainder.toLowerCase() !== remainder) return void 0;
  return `${domain}/${remainder}`;
}
function isValidImageReference(ref) {
  if (ref === "" || IDENTIFIER.test(ref)) return false;
  if (ref.length > 4096) return false;
  const at = ref.indexOf("@");
  const beforeDigest = at < 0 ? ref : ref.slice(0, at);
  const colon = beforeDigest.lastIndexOf(":");
  const hasTag = colon > beforeDigest.lastIndexOf("/");
  const name = hasTag ? beforeDigest.slice(0, colon) : beforeDigest;
  const normalized = normalize(name);
  if (normalized === void 0) return false;
  const full = normalized + ref.slice(name.length);
  const m = REFERENCE.exec(full);
  if (!m) return false;
  if ((m[1] ?? "").length > NAME_TOTAL_LENGTH_MAX) return false;
  const digest = m[2];
  if (digest !== void 0) {
    const [algorithm = "", hex2 = ""] = digest.split(":");
    const want = DIGEST_HEX_LENGTH[algorithm];
    if (want === void 0 || hex2.length !== want || !/^[0-9a-f]+$/.test(hex2)) return false;
  }
  return true;
}

// packages/dockerfile/src/lint/report.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/dockerfile/src/lint/settings.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DEFAULT_SETTINGS = Object.freeze({
  skipAll: false,
  skip: Object.freeze([]),
  experimentalAll: false,
  experimental: Object.freeze([]),
  error: false
});
var CheckOptionError = class extends Error {
};
function parseBool(v) {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  return void 0;
}
function splitN(s, sep, n) {
  const out = [];
  let rest = s;
  while (out.length < n - 1) {
    const i = rest.indexOf(sep);
    if (i < 0) break;
    out.push(rest.slice(0, i));
    rest = rest.slice(i + sep.length);
  }
  out.push(rest);
  return out;
}
var names = (v) => v.split(",").map((r) => r.trim());
function parseCheckSettings(value) {
  const out = { skipAll: false, skip: [], experimentalAll: false, experimental: [], error: false };
  const text = value.trim();
  if (text === "") return out;
  for (const part of splitN(text, ";", 3)) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new CheckOptionError(`invalid check option ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    switch (key) {
      case "skip":
        if (v === "all") out.skipAll = true;
        else out.skip = names(v);
        break;
      case "experimental":
        if (v === "all") out.experimentalAll = true;
        else out.experimental = names(v);
        break;
      case "error": {
        const b = parseBool(v);
        if (b === void 0) {
          throw new CheckOptionError(`failed to parse check option ${JSON.stringify(part)}: strconv.ParseBool: parsing ${JSON.stringify(v)}: invalid syntax`);
        }
        out.error = b;
        break;
      }
      default:
        throw new CheckOptionError(`invalid check option ${JSON.stringify(key)}`);
    }
  }
  return out;
}
function findCheckDirective(text) {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  const lines = body.split("\n");
  let lineNo = 0;
  if (lines[0]?.startsWith("#!")) lineNo = 1;
  const scanner = new DirectiveScanner();
  for (; lineNo < lines.length; lineNo++) {
    const line = (lines[lineNo] ?? "").replace(/\r$/, "");
    let found2;
    try {
      found2 = scanner.scan(line);
    } catch (e) {
      if (e instanceof DirectiveError) return void 0;
      throw e;
    }
    if (!found2) {
      return void 0;
    }
    if (found2.name === "check") {
      const n = lineNo + 1;
      return { value: found2.value.split(" ")[0] ?? "", range: { start: { line: n, column: 1 }, end: { line: n, column: line.length + 1 } } };
    }
  }
  return void 0;
}
function withComments(settings, comments) {
  for (const comment of comments) {
    const value = commentCheckValue(comment);
    if (value === void 0) continue;
    let extra;
    try {
      extra = parseCheckSettings(value);
    } catch {
      return settings;
    }
    return {
      skipAll: settings.skipAll || extra.skipAll,
      skip: [...settings.skip, ...extra.skip],
      experimentalAll: settings.experimentalAll || extra.experimentalAll,
      experimental: [...settings.experimental, ...extra.experimental],
      error: settings.error
    };
  }
  return settings;
}
function commentCheckValue(comment) {
  const scanner = new DirectiveScanner();
  let found2;
  try {
    found2 = scanner.scan(`#${comment}`);
  } catch {
    return void 0;
  }
  if (found2?.name !== "check") return void 0;
  return found2.value.split(" ")[0] ?? "";
}
function ruleEnabled(rule2, settings) {
  if (rule2.experimental) return settings.experimentalAll || settings.experimental.includes(rule2.name);
  return !settings.skipAll && !settings.skip.includes(rule2.name);
}

// packages/dockerfile/src/lint/suggest.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function levenshtein(a, b) {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
var MAX_NAME2 = 256;
function suggest(value, options, budget) {
  let best = "";
  let min = 3;
  if (value.length > MAX_NAME2) return "";
  for (const option of options) {
    if (option === value) return "";
    if (option.length > MAX_NAME2 || Math.abs(option.length - value.length) >= min) continue;
    if (budget && !budget.spend(value.length * option.length)) return "";
    const d = levenshtein(value, option);
    if (d < min) {
      best = option;
      min = d;
    }
  }
  return best;
}
var SuggestBudget = class {
  constructor(left = 5e7) {
    this.left = left;
  }
  left;
  spend(cost) {
    if (cost > this.left) {
      this.left = 0;
      return false;
    }
    this.left -= cost;
    return true;
  }
};

// packages/dockerfile/src/lint/report.ts
var Reporter = class {
  constructor(settings, text) {
    this.settings = settings;
    this.lines = text.split("\n").map((l) => l.replace(/\r$/, ""));
    if (this.lines[0]?.startsWith("\uFEFF")) this.lines[0] = this.lines[0].slice(1);
  }
  settings;
  warnings = [];
  /** Shared by every "did you mean" of this check. */
  suggestions = new SuggestBudget();
  lines;
  /** Characters `word` may still scan; past that a finding keeps the instruction's range. */
  scanBudget = 2e7;
  perComments = /* @__PURE__ */ new WeakMap();
  /** Settings for an instruction with these comments above it ([] for file-wide rules). */
  settingsFor(comments) {
    if (comments.length === 0) return this.settings;
    let s = this.perComments.get(comments);
    if (!s) {
      s = withComments(this.settings, comments);
      this.perComments.set(comments, s);
    }
    return s;
  }
  enabled(rule2, node2) {
    return ruleEnabled(RULES[rule2], this.settingsFor(node2?.prevComment ?? []));
  }
  /** Records a finding unless its rule is off for `node` (the instruction whose comments apply). */
  report(rule2, message, range, node2) {
    if (!this.enabled(rule2, node2)) return;
    const r = RULES[rule2];
    this.warnings.push({ rule: rule2, message, description: r.description, url: r.url, range });
  }
  /**
   * The first match of `re` inside `range` (the instruction's lines), as a range of its own; the
   * instruction's range when the word is not written literally (it came from a variable).
   */
  word(range, re, last = false) {
    const g = new RegExp(re.source, re.flags.includes("g") ? re.flags : `${re.flags}g`);
    let found2;
    for (let l = range.start.line; l <= range.end.line; l++) {
      const line = this.lines[l - 1];
      if (line === void 0) break;
      this.scanBudget -= line.length + 1;
      if (this.scanBudget < 0) return found2 ?? range;
      g.lastIndex = l === range.start.line ? Math.max(0, range.start.column - 1) : 0;
      for (let m = g.exec(line); m; m = g.exec(line)) {
        found2 = { start: { line: l, column: m.index + 1 }, end: { line: l, column: m.index + 1 + m[0].length } };
        if (!last) return found2;
        if (m[0].length === 0) g.lastIndex++;
      }
    }
    return found2 ?? range;
  }
  /** Sorted by position (stable), exact repeats dropped. */
  result() {
    const seen = /* @__PURE__ */ new Set();
    const out = [];
    for (const w of this.warnings) {
      const key = `${w.rule}\0${w.message}\0${w.range.start.line}:${w.range.start.column}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(w);
    }
    return out.sort((a, b) => a.range.start.line - b.range.start.line || a.range.start.column - b.range.start.column);
  }
};
function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
function wordPattern(word) {
  return new RegExp(`(?<![A-Za-z0-9_.-])${escapeRegExp(word)}(?![A-Za-z0-9_])`);
}
function variablePattern(name) {
  return new RegExp(`\\$\\{?${escapeRegExp(name)}(?![A-Za-z0-9_])`);
}

// packages/dockerfile/src/lint/dispatch.ts
var NON_ENV_ARGS = /* @__PURE__ */ new Set(["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"]);
var DEFAULT_PATH2 = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
function expand2(word, env, opts) {
  try {
    return processWordWithMatches(word, env, opts);
  } catch {
    return void 0;
  }
}
var has = (rec, k) => Object.hasOwn(rec, k);
function metaArgs(grouped, predefined, buildArgs, escapeToken) {
  const env = new Map(predefined);
  const declared = /* @__PURE__ */ new Set();
  for (const { inst } of grouped.metaArgs) {
    for (const def of inst.args) {
      declared.add(def.key);
      if (buildArgs && has(buildArgs, def.key)) {
        env.set(def.key, buildArgs[def.key] ?? "");
      } else if (def.value !== void 0) {
        const r = expand2(def.value, env, { escapeToken });
        if (!r) return void 0;
        env.set(def.key, r.result);
      }
    }
  }
  return { env, declared };
}
function checkDefaultBaseNames(grouped, opts, r) {
  const defaults = metaArgs(grouped, opts.predefined, void 0, opts.escapeToken);
  if (!defaults) return;
  for (const { from } of grouped.stages) {
    const m = expand2(from.inst.image, defaults.env, { escapeToken: opts.escapeToken });
    if (!m) return;
    if (!isValidImageReference(m.result)) {
      r.report("InvalidDefaultArgInFrom", RULES.InvalidDefaultArgInFrom.format(from.inst.image), from.inst.range);
    }
  }
}
function checkFrom(stage, global, escapeToken, r) {
  const { node: node2, inst } = stage.from;
  const known2 = /* @__PURE__ */ new Set([...global.declared, ...global.env.keys()]);
  const undeclared = (m) => {
    for (const name of m.unmatched) {
      if (known2.has(name)) continue;
      r.report("UndefinedArgInFrom", RULES.UndefinedArgInFrom.format(name, suggest(name, known2, r.suggestions)), r.word(inst.range, variablePattern(name)), node2);
    }
  };
  const base = expand2(inst.image, global.env, { escapeToken });
  if (base) undeclared(base);
  if (inst.platform !== void 0) {
    const p = expand2(inst.platform, global.env, { escapeToken });
    if (p) {
      undeclared(p);
      const at = r.word(inst.range, /--platform\b/);
      if (p.matched.size === 1 && p.unmatched.size === 0 && p.matched.has("TARGETPLATFORM") && p.result === global.env.get("TARGETPLATFORM")) {
        r.report("RedundantTargetPlatform", RULES.RedundantTargetPlatform.format(inst.platform), at, node2);
      }
      if (p.matched.size === 0 && p.unmatched.size === 0) {
        const parsed = parsePlatformSpec(p.result);
        const name = inst.stageName ?? "";
        if (parsed && !name.includes(parsed.os) && !name.includes(parsed.architecture)) {
          r.report("FromPlatformFlagConstDisallowed", RULES.FromPlatformFlagConstDisallowed.format(p.result), at, node2);
        }
      }
    }
  }
  return base?.result;
}
function envFromList(list) {
  const env = /* @__PURE__ */ new Map();
  for (const kv of list) {
    const eq = kv.indexOf("=");
    if (eq < 0) env.set(kv, "");
    else env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return env;
}
var SECRET = /(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)/i;
var NOT_SECRET = /(?:_|^)(?:public|file|version)(?:_|$)/i;
function exposeParts(raw) {
  const parts = raw.split(":");
  const n = parts.length;
  const container = parts[n - 1] ?? "";
  const mapped = n > 1;
  const slash = container.indexOf("/");
  const port = slash < 0 ? container : container.slice(0, slash);
  const proto = slash < 0 ? "" : container.slice(slash + 1);
  if (port === "") return void 0;
  if (!["", "tcp", "udp", "sctp"].includes(proto.toLowerCase())) return void 0;
  return { proto, mapped };
}
var REMOTE_SOURCE = /^(?:https?:\/\/|git@|git:\/\/|ssh:\/\/)/;
function cleanPath(p) {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const out = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(part);
  }
  const joined = out.join("/");
  if (rooted) return `/${joined}`;
  return joined === "" ? "." : joined;
}
function runDispatchRules(grouped, opts, r) {
  checkDefaultBaseNames(grouped, opts, r);
  const global = metaArgs(grouped, opts.predefined, opts.buildArgs, opts.escapeToken);
  const byName = /* @__PURE__ */ new Map();
  for (const stage of grouped.stages) {
    const baseName = global ? checkFrom(stage, global, opts.escapeToken, r) : void 0;
    const state = initialState(stage, baseName, byName, opts);
    for (const e of stage.commands) dispatch(e, state, global?.env ?? opts.predefined, opts, r);
    if (state.name !== void 0) byName.set(state.name, state);
  }
}
function initialState(stage, baseName, byName, opts) {
  const name = stage.from.inst.stageName;
  const base = baseName === void 0 ? void 0 : byName.get(baseName);
  if (base) {
    return {
      name,
      env: new Map(base.env),
      envKnown: base.envKnown,
      declared: new Set(base.declared),
      workdirSet: base.workdirSet,
      sequence: childSequenceState(base.sequence)
    };
  }
  let env = /* @__PURE__ */ new Map();
  let envKnown = baseName === "scratch";
  if (baseName !== void 0 && baseName !== "scratch") {
    const list = opts.baseEnv?.(baseName);
    if (list) {
      env = envFromList(list);
      envKnown = true;
    }
  }
  if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH2);
  return { name, env, envKnown, declared: /* @__PURE__ */ new Set(), workdirSet: false, sequence: childSequenceState(void 0) };
}
function dispatch(e, st, globalEnv, opts, r) {
  const { node: node2, inst } = e;
  const shellOpts = { escapeToken: opts.escapeToken };
  const word = (w, o = shellOpts) => {
    const m = expand2(w, st.env, o);
    if (!m) return w;
    if (st.envKnown) {
      for (const name of m.unmatched) {
        if (st.declared.has(name) || NON_ENV_ARGS.has(name)) continue;
        const message = RULES.UndefinedVar.format(name, suggest(name, st.env.keys(), r.suggestions));
        r.report("UndefinedVar", message, r.word(inst.range, variablePattern(name)), node2);
      }
    }
    return m.result;
  };
  const secret = (instruction, key) => {
    if (SECRET.test(key) && !NOT_SECRET.test(key)) {
      r.report("SecretsUsedInArgOrEnv", RULES.SecretsUsedInArgOrEnv.format(instruction, key), r.word(inst.range, wordPattern(key)), node2);
    }
  };
  switch (inst.kind) {
    case "env": {
      const pairs = inst.env.map((kv) => ({ key: word(kv.key), value: word(kv.value) }));
      for (const { key, value } of pairs) {
        secret("ENV", key);
        st.env.set(key, value);
      }
      return;
    }
    case "label":
      for (const kv of inst.labels) {
        word(kv.key);
        word(kv.value);
      }
      return;
    case "copy":
    case "add": {
      if (inst.chown !== void 0) word(inst.chown);
      if (inst.chmod !== void 0) word(inst.chmod);
      if (inst.kind === "add" && inst.checksum !== void 0) word(inst.checksum);
      const sources = inst.sources.map((s) => word(s));
      word(inst.dest);
      for (const h of inst.heredocs) if (h.expand) word(h.content, { escapeToken: "\\", skipQuotes: true });
      if (inst.kind === "add" || inst.from === void 0) checkIgnored(inst.kind, sources, inst.range, node2, opts, r);
      return;
    }
    case "workdir": {
      const path8 = word(inst.path);
      if (!st.workdirSet && !path8.startsWith("/")) {
        r.report("WorkdirRelativePath", RULES.WorkdirRelativePath.format(path8), inst.range, node2);
      }
      st.workdirSet = true;
      return;
    }
    case "user":
      word(inst.user);
      return;
    case "volume":
      for (const v of inst.volumes) word(v);
      return;
    case "stopsignal":
      word(inst.signal);
      return;
    case "run":
      for (const m of inst.mounts) {
        try {
          parseMount(m.spec, { expand: (w) => word(w) });
        } catch {
        }
      }
      return;
    case "arg":
      for (const def of inst.args) {
        secret("ARG", def.key);
        let value;
        if (has(opts.buildArgs, def.key)) value = opts.buildArgs[def.key];
        else if (def.value !== void 0) value = word(def.value);
        else value = globalEnv.get(def.key);
        if (value !== void 0 && !NON_ENV_ARGS.has(def.key)) st.env.set(def.key, value);
        st.declared.add(def.key);
      }
      return;
    case "expose":
      for (const p of inst.ports) {
        const m = expand2(p, st.env, shellOpts);
        for (const port of m?.words ?? [p]) {
          const parts = exposeParts(port);
          if (!parts) continue;
          const at = r.word(inst.range, wordPattern(port));
          if (parts.proto !== parts.proto.toLowerCase()) r.report("ExposeProtoCasing", RULES.ExposeProtoCasing.format(port), at, node2);
          if (parts.mapped) r.report("ExposeInvalidFormat", RULES.ExposeInvalidFormat.format(port), at, node2);
        }
      }
      return;
    case "cmd":
    case "entrypoint":
    case "healthcheck":
    case "shell":
      sequenceStep(inst, st.sequence, (w, governedBy) => {
        r.report(w.rule, w.message, w.range, governedBy === inst ? node2 : void 0);
      });
      return;
    default:
      return;
  }
}
function checkIgnored(kind2, sources, range, node2, opts, r) {
  const isIgnored = opts.isIgnored;
  if (!isIgnored) return;
  const patterns = opts.ignorePatterns ?? [];
  if (patterns.some((p) => p.startsWith("!"))) return;
  for (const src of sources) {
    if (REMOTE_SOURCE.test(src)) continue;
    const clean = cleanPath(src);
    const root = clean === "." || clean === "/";
    const ignored = root ? patterns.some((p) => p === "*" || p === "**" || p === "**/*") : isIgnored(clean.replace(/^\/+/, ""));
    if (!ignored) continue;
    const at = r.word(range, wordPattern(src));
    r.report("CopyIgnoredFile", RULES.CopyIgnoredFile.format(kind2 === "add" ? "Add" : "Copy", clean), at, node2);
  }
}

// packages/dockerfile/src/lint/names.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function group(entries) {
  const out = { metaArgs: [], stages: [] };
  for (const e of entries) {
    const inst = e.inst;
    if (inst.kind === "from") {
      out.stages.push({ from: { node: e.node, inst }, commands: [] });
      continue;
    }
    const current = out.stages[out.stages.length - 1];
    if (current) current.commands.push(e);
    else if (inst.kind === "arg") out.metaArgs.push({ node: e.node, inst });
    else return void 0;
  }
  return out;
}
function writtenStageName(node2) {
  const args = [];
  for (let n = node2.next; n; n = n.next) args.push(n.value);
  return args.length === 3 ? args[2] : void 0;
}
var RESERVED_STAGE_NAMES = /* @__PURE__ */ new Set(["context", "scratch"]);
function checkStageNames(stages, r) {
  const seen = /* @__PURE__ */ new Set();
  for (const { from } of stages) {
    const name = from.inst.stageName;
    if (name === void 0) continue;
    const at = r.word(from.inst.range, wordPattern(writtenStageName(from.node) ?? name), true);
    if (RESERVED_STAGE_NAMES.has(name)) r.report("ReservedStageName", RULES.ReservedStageName.format(name), at);
    if (seen.has(name)) r.report("DuplicateStageName", RULES.DuplicateStageName.format(name), at);
    seen.add(name);
  }
}
var consistent = (s) => s === s.toLowerCase() || s === s.toUpperCase();
function checkInstructionCasing(stages, r) {
  const all = [];
  for (const s of stages) all.push(s.from.inst, ...s.commands.map((c) => c.inst));
  const keywords = all.map((i) => instructionKeyword(i.original, i.kind));
  let lower = 0;
  let upper = 0;
  for (const k of keywords) {
    if (!consistent(k)) continue;
    if (k === k.toLowerCase()) lower++;
    else upper++;
  }
  const majorityLower = lower > upper;
  all.forEach((inst, i) => {
    const k = keywords[i] ?? "";
    let casing;
    if (majorityLower && k.toLowerCase() !== k) casing = "lowercase";
    else if (!majorityLower && k.toUpperCase() !== k) casing = "uppercase";
    if (casing === void 0) return;
    const start = inst.range.start;
    const at = { start, end: { line: start.line, column: start.column + k.length } };
    r.report("ConsistentInstructionCasing", RULES.ConsistentInstructionCasing.format(k, casing), at);
  });
}
function checkDescription(e, r) {
  const comments = e.node.prevComment;
  const last = comments[comments.length - 1];
  if (last === void 0) return;
  let instruction;
  let keys;
  if (e.inst.kind === "from") {
    if (e.inst.stageName === void 0) return;
    instruction = "FROM";
    keys = [e.inst.stageName];
  } else if (e.inst.kind === "arg") {
    instruction = "ARG";
    keys = e.inst.args.map((a) => a.key);
  } else {
    return;
  }
  if (keys.length === 0 || keys.includes(last.split(" ")[0] ?? "")) return;
  const example = keys.length > 1 ? "<arg_key>" : keys[0] ?? "";
  r.report("InvalidDefinitionDescription", RULES.InvalidDefinitionDescription.format(instruction, example), e.inst.range, e.node);
}

// packages/dockerfile/src/lint/check.ts
var CHECK_BUILD_ARG = "BUILDKIT_DOCKERFILE_CHECK";
function checkDockerfile(text, opts = {}) {
  const file = opts.file ?? "Dockerfile";
  const buildArgs = opts.buildArgs ?? {};
  const directive = findCheckDirective(text);
  const result = {
    warnings: [],
    errors: [],
    directive,
    settings: parseCheckSettings(""),
    settingsFrom: "default",
    dockerfile: void 0
  };
  if (Object.hasOwn(buildArgs, CHECK_BUILD_ARG)) {
    try {
      result.settings = parseCheckSettings(buildArgs[CHECK_BUILD_ARG] ?? "");
    } catch (e) {
      if (!(e instanceof CheckOptionError)) throw e;
      throw new UsageError(`failed to parse ${CHECK_BUILD_ARG}: ${e.message}`, {
        hint: "expected skip=RULE,\u2026|all;error=true|false;experimental=RULE,\u2026|all"
      });
    }
    result.settingsFrom = "build-arg";
  } else if (directive) {
    try {
      result.settings = parseCheckSettings(directive.value);
    } catch (e) {
      if (!(e instanceof CheckOptionError)) throw e;
      result.errors.push(new DockerfileError(`failed to parse check options: ${e.message}`, {
        file,
        range: directive.range,
        excerpt: excerptOf(text, directive.range),
        hint: "write # check=skip=RULE,\u2026|all;error=true|false;experimental=RULE,\u2026|all"
      }));
      return result;
    }
    result.settingsFrom = "directive";
  }
  const r = new Reporter(result.settings, text);
  let parsed;
  try {
    parsed = parse(text);
  } catch (e) {
    if (!(e instanceof DockerfileError)) throw e;
    result.errors.push(e.withFile(file, text));
    return result;
  }
  for (const w of parsed.warnings) {
    if (w.rule === "NoEmptyContinuation") r.report(w.rule, RULES.NoEmptyContinuation.format(), w.range);
  }
  const entries = [];
  let broken = false;
  for (const node2 of parsed.ast.children) {
    const found2 = [];
    try {
      const inst = parseInstruction(node2, { file, text, warnings: found2 });
      entries.push({ node: node2, inst });
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
      result.errors.push(e);
      broken = true;
    }
    for (const w of found2) r.report(w.rule, w.message, findingRange(r, w, node2), node2);
    if (broken) break;
    const last = entries[entries.length - 1];
    if (last) checkDescription(last, r);
  }
  if (!broken) {
    try {
      result.dockerfile = stagesFromAst(parsed, { file, text });
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
      result.errors.push(e);
    }
    const grouped = group(entries);
    if (grouped && grouped.stages.length > 0) {
      checkStageNames(grouped.stages, r);
      checkInstructionCasing(grouped.stages, r);
      const target2 = opts.target ?? grouped.stages[grouped.stages.length - 1]?.from.inst.stageName ?? "default";
      const targetPlatform2 = parsePlatformSpec(opts.platform ?? "") ?? DEFAULT_PLATFORM;
      const predefined = predefinedArgs(targetPlatform2, DEFAULT_PLATFORM, target2);
      for (const key of predefined.keys()) if (Object.hasOwn(buildArgs, key)) predefined.set(key, buildArgs[key] ?? "");
      const dispatchOpts = {
        escapeToken: parsed.escapeToken,
        buildArgs,
        predefined
      };
      if (opts.baseEnv) dispatchOpts.baseEnv = opts.baseEnv;
      if (opts.isIgnored) dispatchOpts.isIgnored = opts.isIgnored;
      if (opts.ignorePatterns) dispatchOpts.ignorePatterns = opts.ignorePatterns;
      runDispatchRules(grouped, dispatchOpts, r);
    }
  }
  result.warnings = r.result();
  const first = result.warnings[0];
  if (result.errors.length === 0 && result.settings.error && first) {
    const rules = [...new Set(result.warnings.map((w) => w.rule))];
    result.errors.push(new DockerfileError(`lint violation found for rules: ${rules.join(", ")}`, {
      file,
      range: first.range,
      excerpt: excerptOf(text, first.range),
      hint: `error=true is set by ${result.settingsFrom === "build-arg" ? `the ${CHECK_BUILD_ARG} build arg` : "the # check= directive"}; fix the findings or skip their rules`
    }));
  }
  return result;
}
function findingRange(r, w, node2) {
  const args = [];
  for (let n = node2.next; n; n = n.next) args.push(n.value);
  const [, as, name] = args;
  if (args.length !== 3 || as === void 0 || name === void 0) return w.range;
  if (w.rule === "StageNameCasing") return r.word(w.range, wordPattern(name), true);
  if (w.rule === "FromAsCasing") {
    return r.word(w.range, new RegExp(`(?<=\\s)${escapeRegExp(as)}(?=\\s+${escapeRegExp(name)}(?![A-Za-z0-9_.-]))`), true);
  }
  return w.range;
}

// packages/builder/src/check.ts
async function checkBuild(opts) {
  const contextDir = resolvePath8(opts.context);
  await checkContextDir(contextDir, opts.context);
  const file = opts.file && opts.file !== "-" ? opts.file : join16(contextDir, "Dockerfile");
  const shownFile = opts.shownAs ?? (opts.file === "-" ? "<stdin>" : file);
  const text = opts.dockerfileText ?? await readDockerfile(file);
  const ignore = await loadIgnore(contextDir, file);
  const result = checkDockerfile(text, {
    file: shownFile,
    buildArgs: opts.buildArgs ?? {},
    isIgnored: (p) => ignore.ignores(p),
    ignorePatterns: ignore.patterns,
    ...opts.target ? { target: opts.target } : {},
    ...opts.platform ? { platform: opts.platform } : {}
  });
  return { contextDir, file, shownFile, text, ignore, result, checks: result.warnings.map((w) => ({ ...w, file: shownFile })) };
}
function buildableDockerfile(c) {
  const first = c.result.errors[0];
  if (first) throw first;
  if (!c.result.dockerfile) throw new UsageError(`${c.shownFile} could not be parsed`);
  return c.result.dockerfile;
}
async function checkContextDir(dir, given) {
  const shown3 = JSON.stringify(given) + (dir === given ? "" : ` (${dir})`);
  const hint = "the build context is a directory: pass one that exists";
  let isDir;
  try {
    isDir = (await stat6(dir)).isDirectory();
  } catch (e) {
    const code = e.code;
    if (code !== "ENOENT" && code !== "ENOTDIR") throw e;
    throw new UsageError(`build context ${shown3} does not exist`, { hint });
  }
  if (!isDir) throw new UsageError(`build context ${shown3} is not a directory`, { hint });
}
async function readDockerfile(file) {
  try {
    return await readFile13(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read Dockerfile ${file}: ${e.code ?? String(e)}`, {
      hint: "pass the Dockerfile with -f, or put one at the root of the build context"
    });
  }
}

// packages/builder/src/plan.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function contextOf(df, s) {
  if (s.index >= 0) return void 0;
  for (const c of df.contexts?.values() ?? []) if (c.stage === s) return c.context;
  return void 0;
}
function withContexts(df, contexts) {
  if (contexts.length === 0) return df;
  const map = /* @__PURE__ */ new Map();
  const at = { line: 0, column: 0 };
  for (const c of contexts) {
    const range = { start: at, end: at };
    const value = c.spec.slice(c.spec.indexOf("=") + 1);
    const stage = { name: c.name, index: -1, from: { kind: "from", image: value, original: `FROM ${value}`, range }, instructions: [], range };
    map.set(c.name, { stage, context: c });
  }
  const out = { ...df, contexts: map };
  return out;
}
function contextStage(df, ref) {
  const contexts = df.contexts;
  if (!contexts || contexts.size === 0) return void 0;
  const name = contextName(ref);
  return name === void 0 ? void 0 : contexts.get(name)?.stage;
}
function findStage(df, ref, before) {
  const ctx = contextStage(df, ref);
  if (ctx) return ctx;
  const lower = ref.toLowerCase();
  const limit = before ?? df.stages.length;
  for (let i = limit - 1; i >= 0; i--) {
    const s = df.stages[i];
    if (s.name === lower) return s;
  }
  if (/^\d+$/.test(ref)) {
    const s = df.stages[Number(ref)];
    if (s && s.index < limit) return s;
  }
  return void 0;
}
function planStages(df, target2, resolveFrom, file, text) {
  let final;
  if (target2 !== void 0) {
    final = df.stages.find((s) => s.name === target2.toLowerCase());
    if (!final) {
      const names2 = df.stages.map((s) => s.name).filter(Boolean);
      throw new UsageError(`target stage "${target2}" could not be found in ${file}`, {
        hint: names2.length > 0 ? `stages: ${names2.join(", ")}` : "the Dockerfile names no stages (FROM image AS name)"
      });
    }
  } else {
    final = df.stages.at(-1);
  }
  if (!final) throw new DockerfileError("the Dockerfile has no stages", { file });
  if (final.name !== void 0) final = contextStage(df, final.name) ?? final;
  const deps = /* @__PURE__ */ new Map();
  const depsOf = (s) => {
    let d = deps.get(s);
    if (d) return d;
    const base = contextOf(df, s) ? void 0 : findStage(df, resolveFrom(s), s.index);
    const reads = [];
    for (const inst of s.instructions) {
      const refs = [];
      if (inst.kind === "copy" && inst.from !== void 0) refs.push({ ref: inst.from, range: inst.range });
      if (inst.kind === "run") {
        for (const m of inst.mounts) if (m.from !== void 0) refs.push({ ref: m.from, range: inst.range });
      }
      for (const r of refs) {
        const st = findStage(df, r.ref);
        if (st === s) {
          throw new DockerfileError(`${inst.kind.toUpperCase()} --from=${r.ref} refers to its own stage`, {
            file,
            range: r.range,
            excerpt: excerptOf(text, r.range)
          });
        }
        if (st) reads.push(st);
      }
    }
    d = { base, reads };
    deps.set(s, d);
    return d;
  };
  const order = [];
  const state = /* @__PURE__ */ new Map();
  const visit = (s, path8) => {
    const st = state.get(s);
    if (st === "done") return;
    if (st === "visiting") {
      const cycle = [...path8.slice(path8.indexOf(s)), s].map((x) => x.name ?? String(x.index)).join(" -> ");
      throw new DockerfileError(`circular dependency between stages: ${cycle}`, {
        file,
        range: s.from.range,
        excerpt: excerptOf(text, s.from.range)
      });
    }
    state.set(s, "visiting");
    const d = depsOf(s);
    for (const dep of [...d.base ? [d.base] : [], ...d.reads]) visit(dep, [...path8, s]);
    state.set(s, "done");
    order.push(s);
  };
  visit(final, []);
  return { order, deps };
}

// packages/builder/src/platform.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function targetPlatform(spec, where = "--platform") {
  const host = hostPlatform();
  if (spec === void 0 || spec === "") return host;
  const parsed = spec.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => parsePlatform(s, where));
  const names2 = [...new Set(parsed.map(formatPlatform))];
  if (names2.length > 1) {
    throw new UsageError(`${where}: tsbuild builds one platform per run, not ${names2.join(", ")}`, {
      hint: "run one build per platform (a matrix job in CI); multi-platform images are not supported yet"
    });
  }
  const p = parsed[0] ?? parsePlatform(spec, where);
  if (formatPlatform(p) !== formatPlatform(host)) {
    throw new UsageError(`${where}: platform ${formatPlatform(p)} is not supported: tsbuild builds ${formatPlatform(host)} only`, {
      hint: "cross-platform builds need emulation, which tsbuild does not provide yet"
    });
  }
  return p;
}
function platformArgs(target2, build2 = hostPlatform()) {
  return {
    TARGETPLATFORM: formatPlatform(target2),
    TARGETOS: target2.os,
    TARGETARCH: target2.architecture,
    TARGETVARIANT: target2.variant ?? "",
    BUILDPLATFORM: formatPlatform(build2),
    BUILDOS: build2.os,
    BUILDARCH: build2.architecture,
    BUILDVARIANT: build2.variant ?? ""
  };
}
var PROXY_ARGS = /* @__PURE__ */ new Set([
  "HTTP_PROXY",
  "http_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "FTP_PROXY",
  "ftp_proxy",
  "NO_PROXY",
  "no_proxy",
  "ALL_PROXY",
  "all_proxy"
]);

// packages/builder/src/publish.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { writeFile as writeFile7 } from "node:fs/promises";

// packages/builder/src/distribution.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { Readable as Readable7, Writable as Writable4 } from "node:stream";
async function pullToStore(store, refText, opts = {}) {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  try {
    return await pullWith(client, store, ref, refText, opts.signal, opts.lazy === true);
  } finally {
    client.close();
  }
}
async function pullWith(client, store, ref, refText, signal, lazy) {
  const r = await pullImage(client, ref, storeSink(store), { signal, layers: !lazy });
  if (ref.digest !== void 0 && ref.digest !== r.manifestDescriptor.digest) {
    const idx = await getManifest(client, ref, { signal });
    if (idx.isIndex) await store.writeBlob(idx.bytes, { digest: idx.descriptor.digest, size: idx.descriptor.size });
  }
  await recordOrigins(store, [r.manifest.config, ...r.manifest.layers], { kind: "registry", repo: `${ref.registry}/${ref.repository}` });
  let tag;
  const desc = { mediaType: r.manifestDescriptor.mediaType, digest: r.manifestDescriptor.digest, size: r.manifestDescriptor.size };
  if (ref.digest === void 0) tag = await store.tag(refText, desc);
  return { ref, manifest: desc, tag };
}
async function pushFromStore(store, localRef, destText, opts = {}) {
  const dest = parseReference(destText);
  if (!await store.resolve(localRef)) throw new UsageError(`no such image: ${localRef}`);
  const algo = opts.compression ?? "gzip";
  if (opts.format === "docker" && algo === "zstd") throw new UsageError("--format docker cannot carry zstd layers: use --compression gzip");
  const img = await store.loadImage(localRef);
  const manifest = await img.manifest();
  const config = await img.config();
  const configDesc = await img.configDescriptor();
  const layerType = algo === "zstd" ? MediaType.OciLayerZstd : MediaType.OciLayerGzip;
  const layers = [];
  const toCompress = /* @__PURE__ */ new Map();
  for (let i = 0; i < manifest.layers.length; i++) {
    const l = manifest.layers[i];
    if (layerCompression(l.mediaType) !== "none") {
      layers.push(l);
      continue;
    }
    const diffId = config.rootfs.diff_ids[i] ?? l.digest;
    const cached = await store.compressedVariant(diffId, algo);
    layers.push(cached === void 0 ? void 0 : { ...cached, mediaType: layerType });
    if (cached === void 0) toCompress.set(diffId, [...toCompress.get(diffId) ?? [], i]);
  }
  const seen = /* @__PURE__ */ new Set();
  const known2 = [configDesc, ...layers.filter((d) => d !== void 0)].filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  const mounts = /* @__PURE__ */ new Map();
  for (const b of known2) {
    const from = await mountSource(store, b.digest, dest.registry, dest.repository);
    if (from !== void 0) mounts.set(b.digest, from);
  }
  const client = new RegistryClient(opts);
  let digest;
  let blobs;
  try {
    const source = {
      openBlob: async (d) => d.digest === configDesc.digest ? Readable7.from([await store.readBlob(d.digest)]) : store.openBlob(d.digest, { signal: opts.signal })
    };
    const pushOpts = {
      signal: opts.signal,
      mountFrom: (d) => mounts.get(d.digest),
      // A blob whose digest is known goes up in one PUT carrying the whole body: measured against
      // distribution 2.8 here, 1 GiB took 8.5 s that way and 17–26 s in 8 or 64 MiB PATCH chunks.
      // A failed upload restarts that blob from its first byte.
      monolithicMax: Number.POSITIVE_INFINITY
    };
    const queue = [...known2];
    let failed = false;
    const uploadKnown = Promise.all(
      Array.from({ length: Math.min(3, queue.length) }, async () => {
        for (let d = queue.shift(); d !== void 0 && !failed; d = queue.shift()) {
          try {
            const status = await pushBlob(client, dest, d, source, pushOpts);
            opts.onBlob?.({ descriptor: d, status });
          } catch (e) {
            failed = true;
            throw e;
          }
        }
      })
    );
    const compressing = (async () => {
      for (const [diffId, at] of toCompress) {
        const { descriptor, status } = await compressWhileUploading(store, client, dest, diffId, algo, source, pushOpts);
        const d = { ...descriptor, mediaType: layerType };
        for (const i of at) layers[i] = d;
        opts.onBlob?.({ descriptor: d, status });
      }
    })();
    const [a, b] = await Promise.allSettled([uploadKnown, compressing]);
    if (a.status === "rejected") throw a.reason;
    if (b.status === "rejected") throw b.reason;
    const final = layers.map((d) => {
      if (d === void 0) throw new InternalError("a layer was neither known nor compressed");
      return d;
    });
    blobs = [configDesc, ...final];
    let out = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: final };
    const annotations = { ...manifest.annotations ?? {}, ...opts.annotations ?? {} };
    if (Object.keys(annotations).length > 0) out.annotations = annotations;
    if (opts.format === "docker") out = convertManifest(out, "docker");
    const bytes = Buffer.from(JSON.stringify(out));
    digest = await pushManifest(client, dest, bytes, out.mediaType ?? MediaType.OciManifest, { signal: opts.signal });
  } finally {
    client.close();
  }
  await recordOrigins(store, blobs, { kind: "registry", repo: `${dest.registry}/${dest.repository}` });
  return digest;
}
async function compressWhileUploading(store, client, dest, diffId, algo, source, pushOpts) {
  const signal = pushOpts.signal;
  const upload = await startBlobUpload(client, dest, { signal });
  let hashed = () => void 0;
  const digest = new Promise((resolve3) => hashed = resolve3);
  let committed;
  let descriptor;
  try {
    descriptor = await store.compressedBlob(
      diffId,
      algo,
      async (src, sink) => {
        sink.once("hashed", hashed);
        await compress(src, tee(sink, upload.stream), { algorithm: algo, signal, hash: false });
        committed = digest.then((d) => upload.commit(d));
        committed.catch(() => void 0);
      },
      { signal }
    );
  } catch (e) {
    upload.cancel();
    throw e;
  }
  if (committed === void 0) {
    upload.cancel();
    return { descriptor, status: await pushBlob(client, dest, descriptor, source, pushOpts) };
  }
  hashed({ digest: descriptor.digest, size: descriptor.size });
  const sent = await digest;
  if (sent.digest !== descriptor.digest || sent.size !== descriptor.size) {
    throw new InternalError(`compressing ${diffId}: the upload was named ${sent.digest} (${sent.size} bytes) but the store kept ${descriptor.digest} (${descriptor.size} bytes)`);
  }
  try {
    await committed;
    return { descriptor, status: "uploaded" };
  } catch (e) {
    if (!(e instanceof RegistryError) || signal?.aborted) throw e;
    return { descriptor, status: await pushBlob(client, dest, descriptor, source, pushOpts) };
  }
}
function tee(main2, side) {
  main2.on("error", () => void 0);
  return new Writable4({
    highWaterMark: 1 << 20,
    write(chunk, _enc, cb) {
      const waits = [];
      if (!main2.write(chunk)) waits.push(drained(main2, "stream"));
      if (!side.write(chunk)) waits.push(drained(side, "stream").catch(() => void 0));
      if (waits.length === 0) cb();
      else Promise.all(waits).then(() => cb(), (e) => cb(e));
    },
    final(cb) {
      side.end();
      main2.end();
      cb();
    },
    destroy(err, cb) {
      side.destroy(err ?? void 0);
      if (err) main2.destroy(err);
      cb(err);
    }
  });
}

// packages/builder/src/export.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createReadStream as createReadStream2, createWriteStream as createWriteStream2 } from "node:fs";
import { mkdtemp, readdir as readdir8, rename as rename6, rm as rm11, mkdir as mkdir9, stat as stat7 } from "node:fs/promises";
import { dirname as dirname3, basename as basename4, join as join17, resolve as resolvePath10 } from "node:path";
import { PassThrough as PassThrough3, Readable as Readable9, Writable as Writable5 } from "node:stream";
import { pipeline as pipeline8 } from "node:stream/promises";

// packages/builder/src/attest.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash13, randomUUID } from "node:crypto";
import { Readable as Readable8 } from "node:stream";

// packages/attest/src/index.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/attest/src/provenance.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/attest/src/intoto.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1";
var IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";
var PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type";
function statementSubjects(s) {
  const digest = parseDigest(s.digest);
  const set = { sha256: digest.slice("sha256:".length) };
  const names2 = [...new Set((s.names ?? []).filter((n) => n !== ""))].sort();
  if (names2.length === 0) return [{ digest: set }];
  return names2.map((name) => ({ name, digest: { ...set } }));
}
function digestSet(digest) {
  const m = /^([a-z0-9][a-z0-9_+.-]*):([a-f0-9]{32,})$/.exec(digest);
  if (!m) throw new TsbuildError("BAD_DIGEST", `invalid digest ${JSON.stringify(digest.slice(0, 100))}: expected <algorithm>:<hex>`);
  return { [m[1]]: m[2] };
}
function serializeStatement(statement) {
  return canonicalJson(statement);
}
function timestamp(t, what) {
  const d = typeof t === "string" ? new Date(t) : t;
  if (Number.isNaN(d.getTime())) throw new TsbuildError("BAD_TIMESTAMP", `${what}: invalid time ${JSON.stringify(String(t))}`);
  return d.toISOString().replace(".000Z", "Z");
}

// packages/attest/src/purl.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var UNRESERVED = /[A-Za-z0-9._~:-]/;
function purlEncode(component) {
  let out = "";
  for (const ch of component) {
    if (UNRESERVED.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of Buffer.from(ch, "utf8")) out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}
function formatPurl(p) {
  const type = p.type.toLowerCase();
  if (!/^[a-z][a-z0-9.-]*$/.test(type)) throw new TsbuildError("BAD_PURL", `invalid purl type ${JSON.stringify(p.type)}`);
  if (p.name === "") throw new TsbuildError("BAD_PURL", `a ${type} purl needs a name`);
  let out = `pkg:${type}/`;
  const ns = (p.namespace ?? "").split("/").filter((s) => s !== "");
  if (ns.length > 0) out += ns.map(purlEncode).join("/") + "/";
  out += purlEncode(p.name.replace(/^\/+|\/+$/g, ""));
  if (p.version !== void 0 && p.version !== "") out += "@" + purlEncode(p.version);
  const quals = Object.entries(p.qualifiers ?? {}).filter((kv) => kv[1] !== void 0 && kv[1] !== "").map(([k, v]) => {
    const key = k.toLowerCase();
    if (!/^[a-z][a-z0-9._-]*$/.test(key)) throw new TsbuildError("BAD_PURL", `invalid purl qualifier key ${JSON.stringify(k)}`);
    return `${key}=${purlEncode(v)}`;
  }).sort();
  if (quals.length > 0) out += "?" + quals.join("&");
  return out;
}
function debPurl(vendor, name, version, qualifiers) {
  return formatPurl({ type: "deb", namespace: vendor.toLowerCase(), name: name.toLowerCase(), version, qualifiers });
}
function apkPurl(vendor, name, version, qualifiers) {
  return formatPurl({ type: "apk", namespace: vendor.toLowerCase(), name: name.toLowerCase(), version, qualifiers });
}
function npmPurl(packageName, version) {
  const lower = packageName.toLowerCase();
  const slash = lower.startsWith("@") ? lower.indexOf("/") : -1;
  if (slash > 0) return formatPurl({ type: "npm", namespace: lower.slice(0, slash), name: lower.slice(slash + 1), version });
  return formatPurl({ type: "npm", name: lower, version });
}
function normalizePypiName(name) {
  return name.replace(/[-_.]+/g, "-").toLowerCase();
}
function pypiPurl(name, version) {
  return formatPurl({ type: "pypi", name: normalizePypiName(name), version });
}
function splitImageReference(ref) {
  let rest = ref.trim();
  let digest;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const parts = rest.split("/");
  let domain = "docker.io";
  const first = parts[0] ?? "";
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    domain = first;
    parts.shift();
  }
  if (domain === "index.docker.io" || domain === "registry-1.docker.io") domain = "docker.io";
  if (domain === "docker.io" && parts.length === 1) parts.unshift("library");
  const path8 = parts.join("/");
  if (path8 === "" || parts.some((s) => s === "")) throw new TsbuildError("BAD_REFERENCE", `invalid image reference ${JSON.stringify(ref)}`);
  const out = { domain, path: path8.toLowerCase() };
  if (tag !== void 0 && tag !== "") out.tag = tag;
  if (digest !== void 0 && digest !== "") out.digest = digest;
  return out;
}
function dockerImagePurl(ref, digest, platform) {
  const r = splitImageReference(ref);
  let segments = r.path.split("/");
  if (r.domain === "docker.io" && segments[0] === "library" && segments.length === 2) segments = segments.slice(1);
  const name = segments.pop();
  return formatPurl({
    type: "docker",
    namespace: segments.join("/"),
    name,
    version: digest,
    qualifiers: { platform, repository_url: r.domain === "docker.io" ? void 0 : r.domain }
  });
}

// packages/attest/src/secrets.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var SECRET_WORDS = /* @__PURE__ */ new Set([
  "apikey",
  "apikeys",
  "auth",
  "credential",
  "credentials",
  "key",
  "keys",
  "password",
  "passwords",
  "pword",
  "passwd",
  "passwds",
  "secret",
  "secrets",
  "token",
  "tokens"
]);
function words(name) {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase().split(/[_.\-]+/).filter((w) => w !== "");
}
function isSecretName(name) {
  const ws = words(name);
  if (ws.includes("public")) return false;
  return ws.some((w) => SECRET_WORDS.has(w));
}

// packages/attest/src/provenance.ts
var SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1";
var TSBUILD_BUILD_TYPE = "urn:tsbuild:buildtype:dockerfile:v1";
var TSBUILD_DEFAULT_BUILDER_ID = "urn:tsbuild:builder:local";
function platformString(p, what) {
  return formatPlatform(typeof p === "string" ? parsePlatform(p, what) : p);
}
function argEntries(args) {
  if (args === void 0) return [];
  return Array.isArray(args) ? args.map(([k, v]) => [k, v]) : Object.entries(args);
}
function redactValues(text, values) {
  let out = text;
  for (const v of values) if (v.length >= 4) out = out.split(v).join("[redacted]");
  return redactSecrets(out);
}
function sha256Set(d) {
  return { sha256: parseDigest(d).slice("sha256:".length) };
}
function provenanceStatement(input, options) {
  if (options.mode !== "min" && options.mode !== "max") {
    throw new UsageError(`provenance mode must be min or max, got ${JSON.stringify(options.mode)}`);
  }
  const max = options.mode === "max";
  const buildArgs = {};
  const droppedValues = [];
  for (const [k, v] of argEntries(input.buildArgs)) {
    if (isSecretName(k)) droppedValues.push(v);
    else buildArgs[k] = v;
  }
  const external = {
    dockerfile: { path: input.dockerfile.path, digest: sha256Set(input.dockerfile.digest) },
    platform: platformString(input.platform, "provenance platform")
  };
  if (input.target !== void 0 && input.target !== "") external.target = input.target;
  if (Object.keys(buildArgs).length > 0) external.buildArgs = buildArgs;
  if (input.labels && Object.keys(input.labels).length > 0) external.labels = { ...input.labels };
  if (input.context) {
    const ctx = { digest: digestSet(input.context.digest) };
    if (input.context.path !== void 0) ctx.path = input.context.path;
    external.context = ctx;
  }
  if (max && input.secrets && input.secrets.length > 0) {
    external.secrets = [...input.secrets].map((s) => s.optional ? { id: s.id, optional: true } : { id: s.id }).sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }
  if (max && input.ssh && input.ssh.length > 0) external.ssh = [...new Set(input.ssh.map((s) => s.id))].sort().map((id) => ({ id }));
  const internal = {
    builderPlatform: platformString(input.builder.platform ?? hostPlatform(), "builder platform")
  };
  if (max && input.steps) {
    internal.steps = input.steps.map((s) => {
      const step2 = { stage: s.stage, instruction: redactValues(s.instruction, droppedValues), cacheHit: s.cacheHit };
      if (s.cacheKey !== void 0) step2.cacheKey = s.cacheKey;
      if (s.layer) {
        const layer = { digest: sha256Set(s.layer.digest) };
        if (s.layer.mediaType !== void 0) layer.mediaType = s.layer.mediaType;
        if (s.layer.size !== void 0) layer.size = s.layer.size;
        step2.layer = layer;
      }
      if (s.inputs && s.inputs.length > 0) {
        step2.inputs = s.inputs.map((i) => {
          const r = { name: i.name };
          if (i.uri !== void 0) r.uri = redactSecrets(i.uri);
          if (i.digest !== void 0) r.digest = digestSet(i.digest);
          return r;
        });
      }
      return step2;
    });
  }
  const deps = /* @__PURE__ */ new Map();
  for (const b of input.baseImages ?? []) {
    const platform = b.platform === void 0 ? void 0 : platformString(b.platform, `platform of ${b.ref}`);
    const uri = dockerImagePurl(b.ref, parseDigest(b.digest), platform);
    deps.set(uri, { uri, name: b.ref, digest: sha256Set(b.digest) });
  }
  const resolved = [...deps.values()].sort((a, b) => a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0);
  const metadata = {};
  if (input.invocationId !== void 0) metadata.invocationId = input.invocationId;
  if (input.startedOn !== void 0) metadata.startedOn = timestamp(input.startedOn, "startedOn");
  if (input.finishedOn !== void 0) metadata.finishedOn = timestamp(input.finishedOn, "finishedOn");
  const predicate = {
    buildDefinition: {
      buildType: TSBUILD_BUILD_TYPE,
      externalParameters: external,
      internalParameters: internal,
      resolvedDependencies: resolved
    },
    runDetails: {
      builder: { id: input.builder.id ?? TSBUILD_DEFAULT_BUILDER_ID, version: { tsbuild: input.builder.version } }
    }
  };
  if (Object.keys(metadata).length > 0) predicate.runDetails.metadata = metadata;
  return { _type: IN_TOTO_STATEMENT_V1, subject: statementSubjects(input.subject), predicateType: SLSA_PROVENANCE_V1, predicate };
}

// packages/attest/src/scan.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { statSync as statSync3 } from "node:fs";

// packages/attest/src/apk.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/attest/src/license.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var import_spdx_expression_parse = __toESM(require_spdx_expression_parse(), 1);
import { createHash as createHash11 } from "node:crypto";
var MAX_LICENSE_CHARS = 512;
var MAX_EXPRESSION_CHARS = 64 * 1024;
function isSpdxExpression(s) {
  if (s.length === 0 || s.length > MAX_EXPRESSION_CHARS) return false;
  try {
    (0, import_spdx_expression_parse.default)(s);
    return true;
  } catch {
    return false;
  }
}
function licenseRefId(text) {
  const clean = text.replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
  if (clean === text && clean !== "") return `LicenseRef-${clean}`;
  const h = createHash11("sha256").update(text).digest("hex").slice(0, 8);
  return clean === "" ? `LicenseRef-${h}` : `LicenseRef-${clean}-${h}`;
}
var CANONICAL_IDS = [
  "0BSD",
  "AFL-2.1",
  "AGPL-3.0-only",
  "AGPL-3.0-or-later",
  "Apache-1.1",
  "Apache-2.0",
  "Artistic-1.0",
  "Artistic-1.0-Perl",
  "Artistic-2.0",
  "BlueOak-1.0.0",
  "BSD-1-Clause",
  "BSD-2-Clause",
  "BSD-3-Clause",
  "BSD-4-Clause",
  "BSL-1.0",
  "bzip2-1.0.6",
  "CC-BY-3.0",
  "CC-BY-4.0",
  "CC-BY-SA-3.0",
  "CC-BY-SA-4.0",
  "CC0-1.0",
  "CDDL-1.0",
  "CDDL-1.1",
  "curl",
  "EPL-1.0",
  "EPL-2.0",
  "GFDL-1.2-only",
  "GFDL-1.2-or-later",
  "GFDL-1.3-only",
  "GFDL-1.3-or-later",
  "GPL-1.0-only",
  "GPL-1.0-or-later",
  "GPL-2.0-only",
  "GPL-2.0-or-later",
  "GPL-3.0-only",
  "GPL-3.0-or-later",
  "HPND",
  "ICU",
  "IJG",
  "ISC",
  "LGPL-2.0-only",
  "LGPL-2.0-or-later",
  "LGPL-2.1-only",
  "LGPL-2.1-or-later",
  "LGPL-3.0-only",
  "LGPL-3.0-or-later",
  "Libpng",
  "libtiff",
  "MIT",
  "MIT-0",
  "MPL-1.1",
  "MPL-2.0",
  "NCSA",
  "OFL-1.1",
  "OpenSSL",
  "PostgreSQL",
  "PSF-2.0",
  "Python-2.0",
  "Ruby",
  "Sleepycat",
  "Unicode-3.0",
  "Unicode-DFS-2016",
  "Unlicense",
  "UPL-1.0",
  "Vim",
  "W3C",
  "WTFPL",
  "X11",
  "Zlib",
  "ZPL-2.1"
];
var BY_LOWER = new Map(CANONICAL_IDS.map((id) => [id.toLowerCase(), id]));
function spdxId(name) {
  const canonical = BY_LOWER.get(name.toLowerCase()) ?? name;
  return /^[A-Za-z0-9.+-]+$/.test(canonical) && isSpdxExpression(canonical) ? canonical : void 0;
}
function declaredLicense(raw) {
  const s = raw?.trim();
  if (!s || s.length > MAX_LICENSE_CHARS || /^(unknown|none|noassertion|unlicensed)$/i.test(s)) return void 0;
  if (isSpdxExpression(s)) return { expression: s, refs: {} };
  const id = spdxId(s);
  if (id !== void 0) return { expression: id, refs: {} };
  if (s.includes("\n") || s.length > 100) return void 0;
  const ref = licenseRefId(s);
  return { expression: ref, refs: { [ref]: s } };
}
function dep5Name(name, refs) {
  const n = name.trim();
  if (/^expat$/i.test(n)) return "MIT";
  const bsd = /^bsd-([1-4])-clause$/i.exec(n);
  if (bsd) return `BSD-${bsd[1]}-Clause`;
  const gnu = /^(a?gpl|lgpl|gfdl)-?(\d+(?:\.\d+)?)(\+)?$/i.exec(n);
  if (gnu) {
    const family = gnu[1].toUpperCase();
    const version = gnu[2].includes(".") ? gnu[2] : `${gnu[2]}.0`;
    const candidate = `${family}-${version}-${gnu[3] ? "or-later" : "only"}`;
    const id2 = spdxId(candidate);
    if (id2 !== void 0) return id2;
  }
  const id = spdxId(n);
  if (id !== void 0 && !id.endsWith("+")) return id;
  const ref = licenseRefId(n);
  refs[ref] = n;
  return ref;
}
function dep5License(field, refs) {
  const line = field.split("\n")[0].trim();
  if (line === "" || line.length > MAX_LICENSE_CHARS) return void 0;
  const groups = line.split(/\s*,\s*(?=(?:and|or)\s)/i);
  let expr = "";
  for (let i = 0; i < groups.length; i++) {
    let g = groups[i];
    let op = "";
    if (i > 0) {
      const m = /^(and|or)\s+/i.exec(g);
      op = m[1].toUpperCase();
      g = g.slice(m[0].length);
    }
    const alternatives = g.split(/\s+or\s+/i).map((alt) => {
      const all = alt.split(/\s+and\s+/i).map((t) => dep5Name(t, refs));
      return all.length > 1 ? all.join(" AND ") : all[0];
    });
    const part = alternatives.length > 1 ? alternatives.map((a) => a.includes(" AND ") ? `(${a})` : a).join(" OR ") : alternatives[0];
    if (i === 0) expr = part;
    else expr = `${wrap(expr)} ${op} ${wrap(part)}`;
  }
  return isSpdxExpression(expr) ? expr : void 0;
}
function wrap(e) {
  return / (AND|OR) /.test(e) ? `(${e})` : e;
}
function conjoin(expressions) {
  const distinct = [...new Set(expressions)].sort();
  if (distinct.length === 0) return void 0;
  if (distinct.length === 1) return distinct[0];
  return distinct.map(wrap).join(" AND ");
}

// packages/attest/src/osrelease.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function parseOsRelease(text) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2];
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) v = v.slice(1, -1).replace(/\\(.)/g, "$1");
    out[m[1]] = v;
  }
  return out;
}
function readOsRelease(tree) {
  const text = tree.text("/etc/os-release") ?? tree.text("/usr/lib/os-release");
  if (text === void 0) return void 0;
  const kv = parseOsRelease(text);
  const os2 = {};
  const clean = (v) => v !== void 0 && /^[A-Za-z0-9._~+-]{1,64}$/.test(v) ? v : void 0;
  const id = clean(kv.ID)?.toLowerCase();
  if (id !== void 0) os2.id = id;
  const versionId = clean(kv.VERSION_ID);
  if (versionId !== void 0) os2.versionId = versionId;
  const codename = clean(kv.VERSION_CODENAME);
  if (codename !== void 0) os2.codename = codename;
  return os2;
}
function distroQualifier(os2) {
  if (os2?.id === void 0) return void 0;
  const v = os2.versionId ?? os2.codename;
  return v === void 0 ? void 0 : `${os2.id}-${v}`;
}

// packages/attest/src/apk.ts
var DATABASES = ["/lib/apk/db/installed", "/usr/lib/apk/db/installed"];
var NAME_RE = /^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$/;
var VERSION_RE = /^[A-Za-z0-9.+~_-]{1,256}$/;
function parseApkInstalled(text) {
  const records = [];
  let cur;
  let malformed = 0;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") {
      cur = void 0;
      continue;
    }
    if (line.length < 2 || line[1] !== ":") {
      malformed++;
      continue;
    }
    if (cur === void 0) {
      cur = {};
      records.push(cur);
    }
    const v = line.slice(2);
    switch (line[0]) {
      case "P":
        cur.name = v;
        break;
      case "V":
        cur.version = v;
        break;
      case "A":
        cur.arch = v;
        break;
      case "L":
        cur.license = v;
        break;
    }
  }
  return { records, malformed };
}
function scanApk(tree, os2) {
  const vendor = os2?.id ?? "alpine";
  const distro = distroQualifier(os2);
  const out = [];
  const seenHost = /* @__PURE__ */ new Set();
  for (const db of DATABASES) {
    const host = tree.resolve(db);
    if (host === void 0 || seenHost.has(host)) continue;
    seenHost.add(host);
    const text = tree.text(db, { hostPath: host });
    if (text === void 0) continue;
    const { records, malformed } = parseApkInstalled(text);
    if (malformed > 0) tree.warn(`${db}: ${malformed} malformed lines skipped`);
    for (const r of records) {
      if (r.name === void 0 || r.version === void 0) continue;
      if (!NAME_RE.test(r.name) || !VERSION_RE.test(r.version)) {
        tree.warn(`${db}: package ${JSON.stringify(r.name.slice(0, 80))} version ${JSON.stringify(r.version.slice(0, 80))} is not a valid apk name and version, skipped`);
        continue;
      }
      const qualifiers = {};
      if (r.arch !== void 0 && /^[A-Za-z0-9_-]{1,32}$/.test(r.arch)) qualifiers.arch = r.arch;
      if (distro !== void 0) qualifiers.distro = distro;
      const pkg = { ecosystem: "apk", name: r.name, version: r.version, purl: apkPurl(vendor, r.name, r.version, qualifiers), locations: [db] };
      const license = declaredLicense(r.license);
      if (license !== void 0) pkg.license = license;
      out.push(pkg);
    }
  }
  return out;
}

// packages/attest/src/dpkg.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/attest/src/deb822.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function parseDeb822(text) {
  const paragraphs = [];
  let current;
  let lastField;
  let malformed = 0;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") {
      current = void 0;
      lastField = void 0;
      continue;
    }
    if (line.startsWith("#")) continue;
    if (line.startsWith(" ") || line.startsWith("	")) {
      if (current === void 0 || lastField === void 0) {
        malformed++;
        continue;
      }
      const rest = line.slice(1);
      current.set(lastField, `${current.get(lastField)}
${rest === "." ? "" : rest}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      malformed++;
      continue;
    }
    if (current === void 0) {
      current = /* @__PURE__ */ new Map();
      paragraphs.push(current);
    }
    lastField = line.slice(0, colon).trim().toLowerCase();
    current.set(lastField, line.slice(colon + 1).trim());
  }
  return { paragraphs, malformed };
}

// packages/attest/src/dpkg.ts
var STATUS = "/var/lib/dpkg/status";
var STATUS_D = "/var/lib/dpkg/status.d";
var NAME_RE2 = /^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$/;
var VERSION_RE2 = /^[A-Za-z0-9.+~:_-]{1,256}$/;
function isInstalled(status) {
  const [want, flag, state] = status.trim().split(/\s+/);
  return (want === "install" || want === "hold") && flag === "ok" && state === "installed";
}
function copyrightLicense(text) {
  const { paragraphs } = parseDeb822(text);
  const header = paragraphs[0];
  const format2 = header?.get("format");
  if (format2 === void 0 || !/copyright-format|dep-?5/i.test(format2)) return void 0;
  const refs = {};
  const exprs = [];
  for (const p of paragraphs) {
    if (p !== header && !p.has("files")) continue;
    const field = p.get("license");
    if (field === void 0) continue;
    const e = dep5License(field, refs);
    if (e !== void 0) exprs.push(e);
  }
  const expression = conjoin(exprs);
  if (expression === void 0) return void 0;
  const tokens = new Set(expression.split(/[\s()]+/));
  const used = Object.fromEntries(Object.entries(refs).filter(([id]) => tokens.has(id)));
  return { expression, refs: used };
}
function scanDpkg(tree, os2) {
  const vendor = os2?.id ?? "debian";
  const distro = distroQualifier(os2);
  const out = [];
  const licenses = /* @__PURE__ */ new Map();
  const add = (fields2, location, requireStatus) => {
    const name = fields2.get("package");
    const version = fields2.get("version");
    if (name === void 0 || version === void 0) return;
    const status2 = fields2.get("status");
    if (status2 !== void 0 ? !isInstalled(status2) : requireStatus) return;
    if (!NAME_RE2.test(name) || !VERSION_RE2.test(version)) {
      tree.warn(`${location}: package ${JSON.stringify(name.slice(0, 80))} version ${JSON.stringify(version.slice(0, 80))} is not a valid Debian name and version, skipped`);
      return;
    }
    const arch = fields2.get("architecture");
    const qualifiers = {};
    if (arch !== void 0 && /^[a-z0-9-]{1,32}$/.test(arch)) qualifiers.arch = arch;
    if (distro !== void 0) qualifiers.distro = distro;
    if (!licenses.has(name)) {
      const text = tree.text(`/usr/share/doc/${name}/copyright`);
      licenses.set(name, text === void 0 ? void 0 : copyrightLicense(text));
    }
    const pkg = { ecosystem: "deb", name, version, purl: debPurl(vendor, name, version, qualifiers), locations: [location] };
    const license = licenses.get(name);
    if (license !== void 0) pkg.license = license;
    out.push(pkg);
  };
  const status = tree.text(STATUS);
  if (status !== void 0) {
    const db = parseDeb822(status);
    if (db.malformed > 0) tree.warn(`${STATUS}: ${db.malformed} malformed lines skipped`);
    for (const p of db.paragraphs) add(p, STATUS, true);
  }
  for (const f of tree.listFiles(STATUS_D)) {
    if (f.name.startsWith(".") || f.name.endsWith(".md5sums")) continue;
    const text = tree.text(f.imagePath);
    if (text === void 0) continue;
    const db = parseDeb822(text);
    if (db.malformed > 0) tree.warn(`${f.imagePath}: ${db.malformed} malformed lines skipped`);
    for (const p of db.paragraphs) add(p, f.imagePath, false);
  }
  return out;
}

// packages/attest/src/npm.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var NAME_RE3 = /^(?:@[a-z0-9~-][a-z0-9._~-]*\/)?[a-z0-9~-][a-z0-9._~-]*$/i;
var VERSION_RE3 = /^[0-9A-Za-z.+_~-]{1,256}$/;
function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
function validName(n) {
  return typeof n === "string" && n.length <= 214 && NAME_RE3.test(n);
}
function validVersion(v) {
  return typeof v === "string" && VERSION_RE3.test(v);
}
function isInstalledManifest(imagePath) {
  const parts = imagePath.split("/");
  const n = parts.length;
  if (parts[n - 1] !== "package.json" || n < 4) return false;
  if (parts[n - 3] === "node_modules") return !parts[n - 2].startsWith("@") && !parts[n - 2].startsWith(".");
  return parts[n - 3].startsWith("@") && parts[n - 4] === "node_modules";
}
function licenseOf(manifest) {
  const l = manifest.license;
  if (typeof l === "string") return l;
  if (isObject(l) && typeof l.type === "string") return l.type;
  if (Array.isArray(manifest.licenses)) {
    const types = manifest.licenses.map((x) => isObject(x) && typeof x.type === "string" ? x.type : typeof x === "string" ? x : void 0);
    if (types.length > 0 && types.every((t) => t !== void 0)) return types.length === 1 ? types[0] : types.map((t) => `(${t})`).join(" OR ");
  }
  return void 0;
}
function found(name, version, location, license) {
  const pkg = { ecosystem: "npm", name, version, purl: npmPurl(name, version), locations: [location] };
  const l = declaredLicense(license);
  if (l !== void 0) pkg.license = l;
  return pkg;
}
function parseJson2(tree, text, location) {
  try {
    return JSON.parse(text);
  } catch (e) {
    tree.warn(`${location}: not valid JSON (${e.message.slice(0, 200)}), skipped`);
    return void 0;
  }
}
function installedPackage(tree, imagePath, hostPath) {
  const text = tree.text(imagePath, { hostPath });
  if (text === void 0) return void 0;
  const m = parseJson2(tree, text, imagePath);
  if (m === void 0) return void 0;
  if (!isObject(m)) {
    tree.warn(`${imagePath}: not a JSON object, skipped`);
    return void 0;
  }
  if (m.name === void 0 || m.version === void 0) return void 0;
  if (!validName(m.name) || !validVersion(m.version)) {
    tree.warn(`${imagePath}: invalid package name or version, skipped`);
    return void 0;
  }
  return found(m.name, m.version, imagePath, licenseOf(m));
}
function lockfilePackages(tree, imagePath, hostPath) {
  const text = tree.text(imagePath, { hostPath });
  if (text === void 0) return [];
  const lock = parseJson2(tree, text, imagePath);
  if (lock === void 0) return [];
  if (!isObject(lock)) {
    tree.warn(`${imagePath}: not a JSON object, skipped`);
    return [];
  }
  const v = lock.lockfileVersion;
  if (v !== 1 && v !== 2 && v !== 3) {
    tree.warn(`${imagePath}: lockfileVersion ${JSON.stringify(v)} is not 1, 2 or 3, skipped`);
    return [];
  }
  const out = [];
  let invalid2 = 0;
  if (isObject(lock.packages)) {
    for (const [key, entry] of Object.entries(lock.packages)) {
      const at = key.lastIndexOf("node_modules/");
      if (at < 0 || !isObject(entry)) continue;
      if (entry.link === true || entry.dev === true) continue;
      const name = typeof entry.name === "string" ? entry.name : key.slice(at + "node_modules/".length);
      if (!validName(name) || !validVersion(entry.version)) {
        invalid2++;
        continue;
      }
      out.push(found(name, entry.version, imagePath, typeof entry.license === "string" ? entry.license : void 0));
    }
  } else if (isObject(lock.dependencies)) {
    const stack = Object.entries(lock.dependencies);
    while (stack.length > 0) {
      const [key, entry] = stack.pop();
      if (!isObject(entry)) continue;
      if (isObject(entry.dependencies)) stack.push(...Object.entries(entry.dependencies));
      if (entry.dev === true) continue;
      let name = key;
      let version = entry.version;
      const alias = typeof version === "string" ? /^npm:((?:@[^/@]+\/)?[^@]+)@(.+)$/.exec(version) : null;
      if (alias) [name, version] = [alias[1], alias[2]];
      if (!validName(name) || !validVersion(version)) {
        invalid2++;
        continue;
      }
      out.push(found(name, version, imagePath, void 0));
    }
  }
  if (invalid2 > 0) tree.warn(`${imagePath}: ${invalid2} entries without a registry name and version skipped`);
  return out;
}

// packages/attest/src/package.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function mergePackages(found2) {
  const byPurl = /* @__PURE__ */ new Map();
  const key = (p) => `${p.purl}\0${[...p.locations].sort().join("\0")}\0${p.license?.expression ?? ""}`;
  const ordered = [...found2].sort((a, b) => key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
  for (const p of ordered) {
    const have = byPurl.get(p.purl);
    if (!have) {
      byPurl.set(p.purl, { ...p, locations: [...p.locations] });
      continue;
    }
    have.locations.push(...p.locations);
    if (have.license === void 0 && p.license !== void 0) have.license = p.license;
  }
  const out = [...byPurl.values()];
  for (const p of out) p.locations = [...new Set(p.locations)].sort();
  return out.sort((a, b) => a.purl < b.purl ? -1 : a.purl > b.purl ? 1 : 0);
}

// packages/attest/src/python.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var NAME_RE4 = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?$/;
var VERSION_RE4 = /^[A-Za-z0-9.+!_-]{1,128}$/;
function isDistInfoMetadata(imagePath) {
  const parts = imagePath.split("/");
  const n = parts.length;
  return n >= 4 && parts[n - 1] === "METADATA" && parts[n - 2].endsWith(".dist-info") && (parts[n - 3] === "site-packages" || parts[n - 3] === "dist-packages");
}
function parseCoreMetadata(text) {
  const fields2 = /* @__PURE__ */ new Map();
  let last;
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") break;
    if ((line.startsWith(" ") || line.startsWith("	")) && last !== void 0) {
      fields2.set(last, `${fields2.get(last)}
${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    if (!fields2.has(last)) fields2.set(last, line.slice(colon + 1).trim());
    else last = void 0;
  }
  return fields2;
}
function distInfoPackage(tree, imagePath, hostPath) {
  const text = tree.text(imagePath, { hostPath });
  if (text === void 0) return void 0;
  const f = parseCoreMetadata(text);
  const name = f.get("name");
  const version = f.get("version");
  if (name === void 0 || version === void 0 || !NAME_RE4.test(name) || !VERSION_RE4.test(version)) {
    tree.warn(`${imagePath}: no valid Name and Version, skipped`);
    return void 0;
  }
  const pkg = { ecosystem: "pypi", name, version, purl: pypiPurl(name, version), locations: [imagePath] };
  const license = declaredLicense(f.get("license-expression")) ?? declaredLicense(f.get("license"));
  if (license !== void 0) pkg.license = license;
  return pkg;
}

// packages/attest/src/tree.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { closeSync as closeSync4, constants as constants3, fstatSync, lstatSync as lstatSync6, openSync as openSync4, opendirSync, readSync as readSync3 } from "node:fs";
import { resolve as resolvePath9 } from "node:path";
var DEFAULTS = {
  maxFileBytes: 256 * 1024 * 1024,
  maxTotalBytes: 2 * 1024 * 1024 * 1024,
  maxEntries: 2e6,
  maxDepth: 64,
  maxWarnings: 1e3
};
var SKIP_TOP = /* @__PURE__ */ new Set(["proc", "sys", "dev"]);
var Tree = class {
  root;
  limits;
  warningList = [];
  dropped = 0;
  bytesRead = 0;
  constructor(root, limits = {}) {
    this.root = resolvePath9(root);
    this.limits = {
      maxFileBytes: limits.maxFileBytes ?? DEFAULTS.maxFileBytes,
      maxTotalBytes: limits.maxTotalBytes ?? DEFAULTS.maxTotalBytes,
      maxEntries: limits.maxEntries ?? DEFAULTS.maxEntries,
      maxDepth: limits.maxDepth ?? DEFAULTS.maxDepth,
      maxWarnings: limits.maxWarnings ?? DEFAULTS.maxWarnings
    };
  }
  warn(message) {
    if (this.warningList.length < this.limits.maxWarnings) this.warningList.push(message);
    else this.dropped++;
  }
  warnings() {
    return this.dropped > 0 ? [...this.warningList, `${this.dropped} more warnings not shown`] : [...this.warningList];
  }
  /** The host path of an image path, every symlink resolved inside the root; undefined (with a warning) when it cannot be. */
  resolve(imagePath) {
    try {
      return secureJoin(this.root, imagePath, { followLast: true });
    } catch (e) {
      this.warn(`${imagePath}: ${e.message}`);
      return void 0;
    }
  }
  /**
   * The bytes of an image file, or undefined when it is missing (silently, unless `required`),
   * not a regular file, too large, or unreadable (with a warning). `hostPath` skips the resolve
   * for files the walk found (it never follows symlinks).
   */
  read(imagePath, opts = {}) {
    const host = opts.hostPath ?? this.resolve(imagePath);
    if (host === void 0) return void 0;
    let fd;
    try {
      fd = openSync4(host, constants3.O_RDONLY | constants3.O_NOFOLLOW | constants3.O_NONBLOCK);
    } catch (e) {
      const code = e.code;
      if ((code === "ENOENT" || code === "ENOTDIR") && !opts.required) return void 0;
      this.warn(`${imagePath}: cannot open (${code ?? e.message})`);
      return void 0;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) {
        this.warn(`${imagePath}: not a regular file, skipped`);
        return void 0;
      }
      if (st.size > this.limits.maxFileBytes) {
        this.warn(`${imagePath}: ${st.size} bytes is more than the ${this.limits.maxFileBytes} read from one file, skipped`);
        return void 0;
      }
      if (this.bytesRead + st.size > this.limits.maxTotalBytes) {
        this.warn(`${imagePath}: skipped, the scan already read ${this.bytesRead} of its ${this.limits.maxTotalBytes} bytes`);
        return void 0;
      }
      const buf = Buffer.allocUnsafe(st.size + 1);
      let n = 0;
      while (n < buf.length) {
        const got = readSync3(fd, buf, n, buf.length - n, null);
        if (got === 0) break;
        n += got;
      }
      this.bytesRead += n;
      if (n > st.size) {
        this.warn(`${imagePath}: grew while it was read, skipped`);
        return void 0;
      }
      return buf.subarray(0, n);
    } catch (e) {
      this.warn(`${imagePath}: cannot read (${e.code ?? e.message})`);
      return void 0;
    } finally {
      closeSync4(fd);
    }
  }
  text(imagePath, opts = {}) {
    return this.read(imagePath, opts)?.toString("utf8");
  }
  /** Names of the regular files (symlinks resolved inside the root) in an image directory, sorted; [] when missing. */
  listFiles(imageDir) {
    const host = this.resolve(imageDir);
    if (host === void 0) return [];
    const names2 = [];
    try {
      if (!lstatSync6(host, { throwIfNoEntry: false })?.isDirectory()) return [];
      const dir = opendirSync(host);
      try {
        for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
          if (names2.length >= this.limits.maxEntries) {
            this.warn(`${imageDir}: more than ${this.limits.maxEntries} entries, the rest skipped`);
            break;
          }
          names2.push(e.name);
        }
      } finally {
        dir.closeSync();
      }
    } catch (e) {
      this.warn(`${imageDir}: cannot list (${e.code ?? e.message})`);
      return [];
    }
    return names2.sort().map((name) => ({ name, imagePath: `${imageDir.replace(/\/+$/, "")}/${name}` }));
  }
  /**
   * Walks the whole tree without following symlinks, calling `visit` for every regular file with
   * its image path (`/usr/lib/…`) and host path. Skips /proc, /sys and /dev; stops at the entry
   * and depth limits with a warning. Directories are visited in name order, so the walk is the
   * same every time. Yields to the event loop now and then so `signal` can stop it.
   */
  async walk(visit, signal) {
    const stack = [{ host: this.root, image: "", depth: 0 }];
    let entries = 0;
    let dirs = 0;
    while (stack.length > 0) {
      if ((++dirs & 255) === 0) {
        await new Promise((resolve3) => setImmediate(resolve3));
        signal?.throwIfAborted();
      }
      const { host, image, depth } = stack.pop();
      const list = [];
      try {
        const dir = opendirSync(host);
        try {
          for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
            if (++entries > this.limits.maxEntries) break;
            list.push(e);
          }
        } finally {
          dir.closeSync();
        }
      } catch (e) {
        this.warn(`${image || "/"}: cannot list (${e.code ?? e.message})`);
        continue;
      }
      if (entries > this.limits.maxEntries) {
        this.warn(`the tree has more than ${this.limits.maxEntries} entries: the package scan stopped there`);
        return;
      }
      list.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      const subdirs = [];
      for (const e of list) {
        const childImage = `${image}/${e.name}`;
        const childHost = `${host === "/" ? "" : host}/${e.name}`;
        let kind2;
        if (e.isFile()) kind2 = "file";
        else if (e.isDirectory()) kind2 = "dir";
        else if (e.isSymbolicLink() || e.isFIFO() || e.isSocket() || e.isBlockDevice() || e.isCharacterDevice()) kind2 = "other";
        else {
          const st = lstatSync6(childHost, { throwIfNoEntry: false });
          kind2 = st?.isFile() ? "file" : st?.isDirectory() ? "dir" : "other";
        }
        if (kind2 === "dir") {
          if (depth === 0 && SKIP_TOP.has(e.name)) continue;
          if (depth + 1 > this.limits.maxDepth) {
            this.warn(`${childImage}: deeper than ${this.limits.maxDepth} directories, not scanned`);
            continue;
          }
          subdirs.push({ host: childHost, image: childImage, depth: depth + 1 });
        } else if (kind2 === "file") {
          visit(childImage, childHost, e.name);
        }
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]);
    }
  }
};

// packages/attest/src/scan.ts
async function scanRootfs(dir, opts = {}) {
  opts.signal?.throwIfAborted();
  if (!statSync3(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`cannot scan ${dir}: not a directory`);
  const tree = new Tree(dir, opts);
  const os2 = readOsRelease(tree);
  const found2 = [...scanDpkg(tree, os2), ...scanApk(tree, os2)];
  await tree.walk((imagePath, hostPath, name) => {
    if (name === "package-lock.json") found2.push(...lockfilePackages(tree, imagePath, hostPath));
    else if (name === "package.json") {
      if (isInstalledManifest(imagePath)) {
        const p = installedPackage(tree, imagePath, hostPath);
        if (p) found2.push(p);
      }
    } else if (name === "METADATA" && isDistInfoMetadata(imagePath)) {
      const p = distInfoPackage(tree, imagePath, hostPath);
      if (p) found2.push(p);
    }
  }, opts.signal);
  const result = { packages: mergePackages(found2), warnings: tree.warnings() };
  if (os2 !== void 0) result.os = os2;
  return result;
}

// packages/attest/src/spdx.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash12 } from "node:crypto";
var SPDX_PREDICATE_TYPE = "https://spdx.dev/Document";
var SPDX_ROOT_ID = "SPDXRef-Image";
var NOASSERTION = "NOASSERTION";
function idPart(s) {
  return s.replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64) || "x";
}
function sha256Hex(s) {
  return createHash12("sha256").update(s).digest("hex");
}
function uuidOf(text) {
  const h = Buffer.from(sha256Hex(text).slice(0, 32), "hex");
  h[6] = h[6] & 15 | 128;
  h[8] = h[8] & 63 | 128;
  const x = h.toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
function sourceInfo(locations) {
  const shown3 = locations.slice(0, 10).join(", ");
  return locations.length > 10 ? `found in ${shown3} and ${locations.length - 10} more` : `found in ${shown3}`;
}
function spdxDocument(packages, opts) {
  if (opts.name === "") throw new UsageError("an SPDX document needs a name");
  if (opts.tsbuildVersion === "") throw new UsageError("an SPDX document needs the tsbuild version");
  const pkgs = mergePackages(packages);
  const extracted = /* @__PURE__ */ new Map();
  const spdxPackages = [
    {
      SPDXID: SPDX_ROOT_ID,
      name: opts.name,
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: NOASSERTION,
      copyrightText: NOASSERTION,
      primaryPackagePurpose: "CONTAINER"
    }
  ];
  const relationships = [{ spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: SPDX_ROOT_ID }];
  const seenIds = /* @__PURE__ */ new Set([SPDX_ROOT_ID]);
  for (const p of pkgs) {
    let id = `SPDXRef-Package-${p.ecosystem}-${idPart(p.name)}-${sha256Hex(p.purl).slice(0, 16)}`;
    for (let n = 2; seenIds.has(id); n++) id = `${id}-${n}`;
    seenIds.add(id);
    for (const [ref, text] of Object.entries(p.license?.refs ?? {})) if (!extracted.has(ref)) extracted.set(ref, text);
    spdxPackages.push({
      SPDXID: id,
      name: p.name,
      versionInfo: p.version,
      downloadLocation: NOASSERTION,
      filesAnalyzed: false,
      licenseConcluded: NOASSERTION,
      licenseDeclared: p.license?.expression ?? NOASSERTION,
      copyrightText: NOASSERTION,
      externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: p.purl }],
      sourceInfo: sourceInfo(p.locations)
    });
    relationships.push({ spdxElementId: SPDX_ROOT_ID, relationshipType: "CONTAINS", relatedSpdxElement: id });
  }
  const fingerprint = `${opts.namespaceSeed}\0${opts.name}\0${pkgs.map((p) => `${p.purl}\0${p.license?.expression ?? ""}`).join("\n")}`;
  const doc = {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: opts.name,
    documentNamespace: `https://spdx.org/spdxdocs/tsbuild/${idPart(opts.name)}-${uuidOf(fingerprint)}`,
    creationInfo: {
      created: timestamp(opts.created, "SBOM creation time"),
      creators: [`Tool: tsbuild-${opts.tsbuildVersion}`, ...opts.creators ?? []]
    },
    packages: spdxPackages,
    relationships
  };
  if (extracted.size > 0) {
    doc.hasExtractedLicensingInfos = [...extracted.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([licenseId, text]) => ({ licenseId, extractedText: text, name: text.split("\n")[0].slice(0, 100) }));
  }
  return doc;
}
function sbomStatement(doc, subject) {
  return { _type: IN_TOTO_STATEMENT_V1, subject: statementSubjects(subject), predicateType: SPDX_PREDICATE_TYPE, predicate: doc };
}

// packages/attest/src/referrers.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var EMPTY_JSON_MEDIA_TYPE = "application/vnd.oci.empty.v1+json";
var EMPTY_JSON = Buffer.from("{}");
var EMPTY_DESCRIPTOR = Object.freeze({
  mediaType: EMPTY_JSON_MEDIA_TYPE,
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2
});
function subjectDescriptor(d) {
  if (d.mediaType !== MediaType.OciManifest && d.mediaType !== MediaType.DockerManifest && d.mediaType !== MediaType.OciIndex) {
    throw new TsbuildError("BAD_SUBJECT", `an attestation's subject must be an image manifest or index, not ${JSON.stringify(d.mediaType)}`);
  }
  return { mediaType: d.mediaType, digest: parseDigest(d.digest), size: d.size };
}
function attestationManifest(statements, subject, opts = {}) {
  if (statements.length === 0) throw new TsbuildError("NO_ATTESTATIONS", "an attestation manifest needs at least one statement");
  const artifactType = opts.artifactType ?? IN_TOTO_MEDIA_TYPE;
  const blobs = [{ descriptor: { ...EMPTY_DESCRIPTOR }, bytes: Buffer.from(EMPTY_JSON) }];
  for (const s of statements) {
    const bytes2 = serializeStatement(s);
    blobs.push({ descriptor: descriptorFor(IN_TOTO_MEDIA_TYPE, bytes2, { [PREDICATE_TYPE_ANNOTATION]: s.predicateType }), bytes: bytes2 });
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType,
    config: { ...EMPTY_DESCRIPTOR },
    layers: blobs.slice(1).map((b) => b.descriptor),
    subject: subjectDescriptor(subject)
  };
  if (opts.annotations && Object.keys(opts.annotations).length > 0) manifest.annotations = { ...opts.annotations };
  const bytes = canonicalJson(manifest);
  const descriptor = descriptorFor(MediaType.OciManifest, bytes);
  return { manifest, bytes, descriptor, blobs, referrer: referrerDescriptor(descriptor, manifest) };
}
function referrerDescriptor(descriptor, manifest) {
  const d = { mediaType: descriptor.mediaType, digest: parseDigest(descriptor.digest), size: descriptor.size };
  d.artifactType = manifest.artifactType !== void 0 && manifest.artifactType !== "" ? manifest.artifactType : manifest.config.mediaType;
  if (manifest.annotations && Object.keys(manifest.annotations).length > 0) d.annotations = { ...manifest.annotations };
  return d;
}
function referrersFallbackTag(digest) {
  const colon = digest.indexOf(":");
  if (colon <= 0 || colon === digest.length - 1) throw new TsbuildError("BAD_DIGEST", `invalid digest ${JSON.stringify(digest.slice(0, 100))}`);
  const alg = digest.slice(0, colon).slice(0, 32);
  const encoded = digest.slice(colon + 1).slice(0, 64);
  return `${alg}-${encoded}`.replace(/[^a-zA-Z0-9._-]/g, "-");
}
function updateReferrersIndex(existing, referrer, opts = {}) {
  const source = opts.source ?? "the referrers tag";
  let index;
  if (existing === void 0) index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  else {
    try {
      index = parseIndex(existing, { source });
    } catch (e) {
      throw new TsbuildError("BAD_REFERRERS_INDEX", `${source} does not hold a referrers index: ${e.message}`, {
        cause: e,
        hint: "the tag is not tsbuild's to overwrite; delete it or push to a registry with the OCI referrers API"
      });
    }
    if (index.mediaType !== void 0 && index.mediaType !== MediaType.OciIndex) {
      throw new TsbuildError("BAD_REFERRERS_INDEX", `${source} is a ${index.mediaType}, not an OCI image index`);
    }
  }
  const seen = /* @__PURE__ */ new Set();
  const manifests = [];
  for (const d of index.manifests) {
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    manifests.push(d);
  }
  const digest = parseDigest(referrer.digest);
  const changed2 = !seen.has(digest) || manifests.length !== index.manifests.length;
  if (!seen.has(digest)) manifests.push({ ...referrer, digest });
  const updated = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  if (index.annotations && Object.keys(index.annotations).length > 0) updated.annotations = { ...index.annotations };
  const { bytes, descriptor } = serialize(MediaType.OciIndex, updated);
  return { index: updated, bytes, descriptor, changed: changed2 };
}

// packages/builder/src/attest.ts
var BUILDER_VERSION = true ? "0.1.0" : "0.0.0-dev";
var NS2 = "referrers";
var Attestations = class {
  constructor(opts, input) {
    this.opts = opts;
    this.input = input;
  }
  opts;
  input;
  packages;
  invocationId = randomUUID();
  get wanted() {
    return this.opts.provenance !== void 0 && this.opts.provenance !== false || this.opts.sbom === true;
  }
  scan() {
    return this.packages ??= (async () => {
      const fs7 = await this.input.rootfs();
      try {
        const r = await scanRootfs(fs7.dir);
        for (const w of r.warnings) this.input.warn(`sbom: ${w}`);
        return r.packages;
      } finally {
        await fs7.release();
      }
    })();
  }
  async statements(subject, names2) {
    const out = [];
    const sub = { digest: subject.digest, names: names2 };
    const i = this.input;
    if (this.opts.provenance) {
      out.push(
        provenanceStatement(
          {
            subject: sub,
            dockerfile: { path: i.dockerfile.path, digest: `sha256:${createHash13("sha256").update(i.dockerfile.text).digest("hex")}` },
            ...i.target !== void 0 ? { target: i.target } : {},
            buildArgs: i.buildArgs,
            ...i.labels ? { labels: i.labels } : {},
            platform: i.platform,
            context: { path: i.context.path, digest: await i.context.digest() },
            baseImages: i.baseImages,
            builder: { version: BUILDER_VERSION },
            invocationId: this.invocationId,
            startedOn: i.startedOn,
            finishedOn: i.finishedOn,
            secrets: i.secrets.map((id) => ({ id })),
            ssh: i.ssh.map((id) => ({ id })),
            steps: i.steps
          },
          { mode: this.opts.provenance }
        )
      );
    }
    if (this.opts.sbom) {
      const name = names2[0] ?? subject.digest;
      out.push(sbomStatement(spdxDocument(await this.scan(), { name, namespaceSeed: subject.digest, created: i.created, tsbuildVersion: BUILDER_VERSION }), sub));
    }
    return out;
  }
};
async function storeAttestations(store, subject, statements) {
  if (statements.length === 0) return void 0;
  const att = attestationManifest(statements, subject);
  for (const b of att.blobs) await store.writeBlob(b.bytes, { digest: b.descriptor.digest, size: b.descriptor.size });
  await store.writeBlob(att.bytes, { digest: att.descriptor.digest, size: att.descriptor.size });
  await storeReferrer(store, subject.digest, att.referrer, att.blobs.map((b) => b.descriptor));
  return att.referrer;
}
async function storeReferrer(store, subject, referrer, blobs) {
  const meta = store.meta(NS2);
  const old = await meta.get(subject);
  const list = Array.isArray(old) ? old.filter((d) => d.digest !== referrer.digest) : [];
  const next = [...list, referrer];
  const roots = [];
  for (const r of next) {
    roots.push(r.digest);
    if (r.digest === referrer.digest) roots.push(...blobs.map((b) => b.digest));
    else if (await store.hasBlob(r.digest)) {
      const m = parseManifest(await store.readBlob(r.digest), { source: r.digest });
      roots.push(m.config.digest, ...m.layers.map((l) => l.digest));
    }
  }
  await meta.set(subject, next, { roots });
}
async function referrersOf(store, subject) {
  const v = await store.meta(NS2).get(subject);
  return Array.isArray(v) ? v.filter((d) => isDigest(d?.digest)) : [];
}
async function pushAttestations(destText, subject, statements, opts) {
  if (statements.length === 0) return void 0;
  const att = attestationManifest(statements, subject);
  const dest = parseReference(destText);
  const client = new RegistryClient(opts);
  try {
    const blobs = new Map(att.blobs.map((b) => [b.descriptor.digest, b.bytes]));
    await pushImage(client, withDigest(dest, att.descriptor.digest), {
      manifest: async () => ({ bytes: att.bytes, mediaType: MediaType.OciManifest }),
      openBlob: async (d) => Readable8.from([blobs.get(d.digest) ?? Buffer.alloc(0)])
    }, { signal: opts.signal });
    if (await hasReferrersApi(client, dest, subject.digest, opts.signal)) return { digest: att.descriptor.digest, via: "referrers-api" };
    const tagRef = withTag(dest, referrersFallbackTag(subject.digest));
    let existing;
    try {
      existing = (await getManifest(client, tagRef, { signal: opts.signal })).bytes;
    } catch (e) {
      if (!(e instanceof TsbuildError && e.status === 404)) throw e;
    }
    const u = updateReferrersIndex(existing, att.referrer, { source: tagRef.toString() });
    if (u.changed) await pushManifest(client, tagRef, u.bytes, MediaType.OciIndex, { signal: opts.signal });
    return { digest: att.descriptor.digest, via: "fallback-tag" };
  } finally {
    client.close();
  }
}
async function hasReferrersApi(client, ref, digest, signal) {
  const res = await client.request(ref.registry, {
    method: "GET",
    path: `/v2/${ref.repository}/referrers/${digest}`,
    scopes: [pullScope(ref.repository)],
    what: `referrers of ${digest}`,
    signal
  });
  const type = res.header("content-type") ?? "";
  res.discard();
  return res.status === 200 && type.startsWith(MediaType.OciIndex);
}

// packages/builder/src/export.ts
var ANNOTATION_IMAGE_NAME = "io.containerd.image.name";
function defaultNames(ref) {
  return ref.startsWith("sha256:") || ref.includes("@") || /^[0-9a-f]{12,64}$/.test(ref) ? [] : [ref];
}
async function loadFromStore(store, ref, names2) {
  if (!await store.resolve(ref)) throw new UsageError(`no such image: ${ref}`);
  const img = await store.loadImage(ref);
  const manifestDesc = await img.descriptor();
  if (!isManifestMediaType(manifestDesc.mediaType)) throw new UsageError(`${ref} is an index; export one platform's image`);
  const rawManifest = await store.readBlob(manifestDesc.digest);
  const manifest = await img.manifest();
  const rawConfig = await store.readBlob(manifest.config.digest);
  return { manifest, manifestDesc, rawManifest, rawConfig, config: await img.config(), names: names2.map((n) => normalizeName(n)) };
}
async function exportImage(store, ref, opts) {
  const names2 = opts.tags && opts.tags.length > 0 ? opts.tags : defaultNames(ref);
  const images = [{ ...await loadFromStore(store, ref, names2), descriptorAnnotations: opts.annotations }];
  switch (opts.type) {
    case "oci":
    case "docker":
      return writeArchive(store, images, opts.type, opts.dest, opts.signal);
    case "local":
      if (typeof opts.dest !== "string" || opts.dest === "-") throw new UsageError("type=local needs dest=DIRECTORY");
      await unpackImage(store, images[0], opts.dest, opts.signal);
      return { size: 0 };
    case "tar":
      return writeFilesystemTar(store, images[0], opts.dest, opts.signal);
    default:
      throw new UsageError(`unknown export type ${JSON.stringify(opts.type)}`);
  }
}
var TYPES3 = ["image", "registry", "oci", "docker", "local", "tar"];
function parseOutput(spec) {
  if (spec === "-") return { type: "tar", dest: "-" };
  if (!spec.includes("=")) return { type: "local", dest: spec };
  const fields2 = /* @__PURE__ */ new Map();
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new UsageError(`--output ${spec}: expected KEY=VALUE pairs, got ${JSON.stringify(part)}`);
    fields2.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
  }
  const type = fields2.get("type") ?? "image";
  if (!TYPES3.includes(type)) throw new UsageError(`--output ${spec}: unknown type ${JSON.stringify(type)}`, { hint: `one of ${TYPES3.join(", ")}` });
  const names2 = (fields2.get("name") ?? "").split(/[;\s]+/).filter((n) => n !== "");
  if (type === "image") return { type, names: names2, push: ["true", "1"].includes(fields2.get("push") ?? "") };
  if (type === "registry") return { type, names: names2 };
  const dest = fields2.get("dest");
  if (dest === void 0 || dest === "") throw new UsageError(`--output ${spec}: type=${type} needs dest=${type === "local" ? "DIRECTORY" : "FILE"}`);
  if (type === "local" && dest === "-") throw new UsageError(`--output ${spec}: type=local writes a directory, not stdout`);
  return { type, dest };
}
function fileHeader(path8, size) {
  return encodeHeader({ path: path8, type: "file", mode: 420, uid: 0, gid: 0, size, mtime: 0 });
}
function dirHeader(path8) {
  return encodeHeader({ path: path8, type: "dir", mode: 493, uid: 0, gid: 0, size: 0, mtime: 0 });
}
function openSink(dest) {
  if (typeof dest !== "string") return { out: dest, done: async () => {
  }, fail: async () => {
  } };
  if (dest === "-") return { out: process.stdout, done: async () => {
  }, fail: async () => {
  } };
  const final = resolvePath10(dest);
  const tmp = join17(dirname3(final), `.${basename4(final)}.tmp-${process.pid}-${Date.now()}`);
  return {
    out: createWriteStream2(tmp, { mode: 420 }),
    done: () => rename6(tmp, final),
    fail: () => rm11(tmp, { force: true })
  };
}
async function writeTo(dest, gen, signal) {
  const sink = openSink(dest);
  let size = 0;
  const counted = async function* () {
    for await (const c of gen) {
      size += c.length;
      yield c;
    }
  };
  try {
    const end = sink.out !== process.stdout;
    if (end) await pipeline8(Readable9.from(counted()), sink.out, { signal });
    else await pipeline8(Readable9.from(counted()), sink.out, { end: false, signal });
    await sink.done();
  } catch (e) {
    await sink.fail().catch(() => {
    });
    throw e;
  }
  return size;
}
async function* blobEntry(store, path8, d) {
  yield fileHeader(path8, d.size);
  let n = 0;
  for await (const c of await store.openBlob(d.digest)) {
    const chunk = c;
    n += chunk.length;
    if (n > d.size) break;
    yield chunk;
  }
  if (n !== d.size) throw new TsbuildError("DIGEST_MISMATCH", `store blob ${d.digest} is ${n} bytes, its descriptor says ${d.size}`);
  const pad = padding(d.size);
  if (pad > 0) yield Buffer.alloc(pad);
}
function* bytesEntry(path8, bytes) {
  yield fileHeader(path8, bytes.length);
  yield bytes;
  const pad = padding(bytes.length);
  if (pad > 0) yield Buffer.alloc(pad);
}
function blobPath(d) {
  return `blobs/sha256/${digestHex(d)}`;
}
function repoTag(name) {
  if (name.includes("@")) return void 0;
  const slash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  return colon > slash ? [name.slice(0, colon), name.slice(colon + 1)] : [name, "latest"];
}
async function writeArchive(store, images, format2, dest, signal) {
  const referrers = [];
  const gen = async function* () {
    const written = /* @__PURE__ */ new Set();
    yield dirHeader("blobs/");
    yield dirHeader("blobs/sha256/");
    for (const img of images) {
      if (!written.has(img.manifest.config.digest)) {
        written.add(img.manifest.config.digest);
        yield* bytesEntry(blobPath(img.manifest.config.digest), img.rawConfig);
      }
      for (const [i, l] of img.manifest.layers.entries()) {
        if (format2 === "docker") {
          const c = layerCompression(l.mediaType);
          if (c !== "none" && c !== "gzip") {
            const diffId = img.config.rootfs.diff_ids[i];
            if (diffId === void 0 || !await store.hasBlob(diffId)) {
              throw new UsageError(`layer ${l.digest} is ${c}-compressed, which Docker archives cannot carry`, {
                hint: "save it with --format oci"
              });
            }
            if (written.has(diffId)) continue;
            written.add(diffId);
            const { size } = await stat7(store.blobPath(diffId));
            yield* blobEntry(store, blobPath(diffId), { mediaType: MediaType.OciLayer, digest: diffId, size });
            continue;
          }
        }
        if (written.has(l.digest)) continue;
        written.add(l.digest);
        yield* blobEntry(store, blobPath(l.digest), l);
      }
      if (format2 === "oci" && !written.has(img.manifestDesc.digest)) {
        written.add(img.manifestDesc.digest);
        yield* bytesEntry(blobPath(img.manifestDesc.digest), img.rawManifest);
      }
      if (format2 === "oci") {
        for (const r of await referrersOf(store, img.manifestDesc.digest)) {
          if (written.has(r.digest) || !await store.hasBlob(r.digest)) continue;
          const raw = await store.readBlob(r.digest);
          const m = parseManifest(raw, { source: r.digest });
          for (const b of [m.config, ...m.layers]) {
            if (written.has(b.digest)) continue;
            written.add(b.digest);
            yield* blobEntry(store, blobPath(b.digest), b);
          }
          written.add(r.digest);
          yield* bytesEntry(blobPath(r.digest), raw);
          referrers.push(r);
        }
      }
    }
    if (format2 === "oci") {
      yield* bytesEntry("oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
      const manifests = [];
      for (const img of images) {
        const base = { mediaType: img.manifestDesc.mediaType, digest: img.manifestDesc.digest, size: img.manifestDesc.size };
        const extra = img.descriptorAnnotations ?? {};
        if (img.names.length === 0) manifests.push(Object.keys(extra).length > 0 ? { ...base, annotations: { ...extra } } : base);
        for (const n of img.names) manifests.push({ ...base, annotations: { ...extra, [ANNOTATION_REF_NAME]: n, [ANNOTATION_IMAGE_NAME]: fullName(n) } });
      }
      manifests.push(...referrers);
      yield* bytesEntry("index.json", Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests })));
    } else {
      const entries = [];
      const repositories = {};
      for (const img of images) {
        const layers = img.manifest.layers.map((l, i) => {
          const c = layerCompression(l.mediaType);
          return blobPath(c === "none" || c === "gzip" ? l.digest : img.config.rootfs.diff_ids[i]);
        });
        entries.push({ Config: blobPath(img.manifest.config.digest), RepoTags: img.names.filter((n) => repoTag(n)), Layers: layers });
        const top = img.config.rootfs.diff_ids.at(-1);
        for (const n of img.names) {
          const rt = repoTag(n);
          if (!rt || top === void 0) continue;
          (repositories[rt[0]] ??= {})[rt[1]] = digestHex(top);
        }
      }
      yield* bytesEntry("manifest.json", Buffer.from(JSON.stringify(entries)));
      yield* bytesEntry("repositories", Buffer.from(JSON.stringify(repositories)));
    }
    yield endOfArchive();
  };
  return { size: await writeTo(dest, gen(), signal) };
}
function fullName(n) {
  const first = n.split("/")[0] ?? "";
  const hasHost = n.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  if (hasHost) return n;
  return n.includes("/") ? `docker.io/${n}` : `docker.io/library/${n}`;
}
async function unpackImage(store, img, dest, signal) {
  const dir = resolvePath10(dest);
  await mkdir9(dir, { recursive: true });
  if ((await readdir8(dir)).length > 0) throw new UsageError(`output directory ${dest} is not empty`);
  for (const [i, l] of img.manifest.layers.entries()) {
    const stats = await apply(await store.openBlob(l.digest), dir, { signal });
    const want = img.config.rootfs.diff_ids[i];
    if (stats.diffId !== want) {
      throw new TsbuildError("DIGEST_MISMATCH", `layer ${i + 1} (${l.digest}) unpacks to ${stats.diffId}, the image config says ${want ?? "nothing"}`);
    }
  }
}
async function writeFilesystemTar(store, img, dest, signal) {
  const tmp = await mkdtemp(join17(store.root, "export-"));
  try {
    const tree = join17(tmp, "rootfs");
    await unpackImage(store, img, tree, signal);
    const pass = new PassThrough3({ highWaterMark: 1 << 20 });
    const diffing = diff(tree, pass, { signal });
    const [size] = await Promise.all([writeTo(dest, pass, signal), diffing]);
    return { size };
  } finally {
    await rm11(tmp, { recursive: true, force: true });
  }
}

// packages/builder/src/publish.ts
function planPublish(opts) {
  const outputs = opts.outputs ?? [];
  const names2 = [.../* @__PURE__ */ new Set([...opts.tags ?? [], ...outputs.flatMap((o) => "names" in o ? o.names : [])])];
  const push = opts.push === true || outputs.some((o) => o.type === "registry" || o.type === "image" && o.push);
  if (push && names2.length === 0) throw new UsageError("push needs at least one tag to push to", { hint: "name the image with -t (the tags input of the Action), or with name= in the output" });
  const files = outputs.filter((o) => "dest" in o);
  if (files.filter((o) => o.dest === "-").length > 1) throw new UsageError("only one --output can write to stdout");
  return { names: names2, push, files };
}
async function publish(store, image, opts) {
  const plan = planPublish(opts);
  const emit = opts.emit ?? (() => {
  });
  const tags = [];
  for (const t of plan.names) tags.push(await store.tag(t, image.manifest));
  const att = opts.attestations?.wanted ? opts.attestations : void 0;
  if (att) await storeAttestations(store, image.manifest, await att.statements(image.manifest, tags));
  if (opts.iidFile !== void 0) await writeFile7(opts.iidFile, image.configDigest);
  const exported = [];
  for (const o of plan.files) {
    const r = await exportImage(store, image.manifest.digest, { type: o.type, dest: o.dest, tags, annotations: image.manifest.annotations, signal: opts.signal });
    exported.push({ type: o.type, dest: o.dest, size: r.size });
    emit({ type: "exported", time: Date.now(), output: o.type, dest: o.dest, size: r.size });
  }
  const pushed = [];
  if (plan.push) {
    const annotations = await opts.pushAnnotations?.();
    for (const t of tags) {
      const digest2 = await pushFromStore(store, t, t, {
        ...opts.registry,
        annotations,
        compression: opts.compression ?? "gzip",
        signal: opts.signal,
        onBlob: (b) => emit({ type: "push-blob", time: Date.now(), ref: t, digest: b.descriptor.digest, status: b.status })
      });
      pushed.push({ ref: t, digest: digest2 });
      emit({ type: "pushed", time: Date.now(), ref: t, digest: digest2 });
      if (att) {
        const subject = await pushedDescriptor(t, digest2, opts.registry ?? {}, opts.signal);
        const r = await pushAttestations(t, subject, await att.statements(subject, [t]), { ...opts.registry, signal: opts.signal });
        if (r) emit({ type: "attested", time: Date.now(), ref: t, digest: r.digest, subject: digest2, via: r.via });
      }
    }
  }
  const digest = pushed.at(-1)?.digest ?? image.manifest.digest;
  const metadata = {
    "containerimage.digest": digest,
    "containerimage.config.digest": image.configDigest,
    "containerimage.descriptor": image.manifest,
    "image.name": tags.join(",")
  };
  if (opts.metadataFile !== void 0) await writeFile7(opts.metadataFile, JSON.stringify(metadata, null, 2) + "\n");
  return { tags, digest, pushed, exported, metadata };
}
async function pushedDescriptor(ref, digest, registry, signal) {
  const client = new RegistryClient(registry);
  try {
    return (await getManifest(client, withDigest(parseReference(ref), digest), { signal })).descriptor;
  } finally {
    client.close();
  }
}

// packages/builder/src/session.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { mkdir as mkdir10, readdir as readdir9 } from "node:fs/promises";
import { join as join18 } from "node:path";
import { availableParallelism as availableParallelism2 } from "node:os";

// packages/builder/src/cache.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash14 } from "node:crypto";
function cacheKey(parts) {
  return createHash14("sha256").update(JSON.stringify(parts)).digest("hex");
}
var CacheIndex = class {
  constructor(meta) {
    this.meta = meta;
  }
  meta;
  async get(key) {
    const v = await this.meta.get(key);
    return v && v.v === 1 && typeof v.created === "string" ? v : void 0;
  }
  async set(key, rec) {
    await this.meta.set(key, rec, rec.layer ? { roots: [rec.layer.diffId] } : {});
  }
  async forget(key) {
    await this.meta.delete(key);
  }
  async clear() {
    const keys = await this.meta.keys();
    for (const k of keys) await this.meta.delete(k);
    return keys.length;
  }
};
var Semaphore = class {
  constructor(limit) {
    this.limit = limit;
  }
  limit;
  waiting = [];
  active = 0;
  async run(fn) {
    if (this.active >= this.limit) await new Promise((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
};

// packages/builder/src/session.ts
function requireRoot(what) {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new UsageError(`${what} needs root: it mounts overlayfs and runs containers with runc`, {
      hint: "run it as root, in a user namespace where it is root, or through the tsbuild CLI, which makes one for an ordinary user"
    });
  }
}
var BuildSession = class {
  constructor(root, store, snapshots, opts) {
    this.root = root;
    this.store = store;
    this.snapshots = snapshots;
    this.opts = opts;
    this.cache = new CacheIndex(store.meta("build-cache", { durable: false }));
    this.remote = RemoteCaches.empty(store);
  }
  root;
  store;
  snapshots;
  opts;
  cache;
  heavy = new Semaphore(Math.max(1, availableParallelism2()));
  images = /* @__PURE__ */ new Map();
  stepCounter = 0;
  /** The caches --cache-from names (none by default). */
  remote;
  /** Keys whose remote results turned out to lie: they are not taken from a remote cache again. */
  distrusted = /* @__PURE__ */ new Set();
  /** diff_id → keys whose result came from a remote cache with that layer. */
  remoteLayers = /* @__PURE__ */ new Map();
  /** Every step this build ran or reused, for --cache-to. */
  journal = /* @__PURE__ */ new Map();
  /** Cache mounts the build used: directory name → id as written. */
  mountsUsed = /* @__PURE__ */ new Map();
  mountRestores = /* @__PURE__ */ new Map();
  /** Every step as provenance describes it, in the order they finished. */
  steps = [];
  /** Says why steps miss the cache (set by a build that has a tag or a context to compare with). */
  explain;
  /** Chain ids known to be unpacked snapshots. */
  unpacked = /* @__PURE__ */ new Set();
  /**
   * A step's cached result: the local index first, then each --cache-from in order. A remote
   * result is copied into the local index; its layer stays remote until something reads it.
   */
  async lookup(key) {
    if (this.opts.noCache) return void 0;
    const local = await this.cache.get(key);
    if (local && (!local.layer || await this.store.available(local.layer.diffId))) return local;
    const hit = await this.remote.lookup(key, this.distrusted);
    if (!hit) return void 0;
    const rec = { v: 1, created: hit.entry.created };
    if (hit.entry.layer) {
      rec.layer = { diffId: hit.entry.layer.diffId, size: hit.entry.layer.size };
      const keys = this.remoteLayers.get(rec.layer.diffId) ?? [];
      this.remoteLayers.set(rec.layer.diffId, [...keys, key]);
    }
    await this.cache.set(key, rec);
    return rec;
  }
  /** Notes what a step did, for the cache export. */
  record(r) {
    this.journal.set(r.key, r);
  }
  /**
   * A remote layer did not match the diff_id its cache claimed: the steps that took it are
   * forgotten (locally too) and not taken from a remote cache again, so a rebuild runs them.
   */
  async distrust(diffId) {
    const keys = this.remoteLayers.get(diffId) ?? [];
    for (const k of keys) {
      this.distrusted.add(k);
      await this.cache.forget(k);
    }
    this.remoteLayers.delete(diffId);
    return keys;
  }
  stat;
  /** The context stat cache, kept under the root so an unchanged context is not read again. */
  statCache() {
    return this.stat ??= StatCache.load(join18(this.root, "stat-cache.json"));
  }
  async saveStatCache() {
    if (this.stat) await (await this.stat).save();
  }
  get stateDir() {
    return join18(this.root, "state");
  }
  nextStepId() {
    return `s${++this.stepCounter}`;
  }
  checkAbort() {
    if (this.opts.signal?.aborted) throw new CancelledError("build cancelled");
  }
  /** The `created` time for a new history entry: SOURCE_DATE_EPOCH when set, else now. */
  now() {
    const e = this.opts.sourceDateEpoch;
    return new Date(e !== void 0 ? e * 1e3 : Date.now()).toISOString().replace(/\.\d{3}Z$/, "Z");
  }
  /**
   * The directory of cache mount `name` (a hash of its id). An empty one is first filled from a
   * --cache-from that carries it (exported with mounts=true).
   */
  async cacheMountDir(name, id = name) {
    const dir = join18(this.root, "cache-mounts", name);
    await mkdir10(dir, { recursive: true });
    this.mountsUsed.set(name, id);
    let restoring = this.mountRestores.get(name);
    if (!restoring) {
      restoring = (async () => {
        if (this.opts.noCache || this.remote.size === 0 || (await readdir9(dir)).length > 0) return;
        const hit = await this.remote.mount(name);
        if (!hit) return;
        const restored = await restoreMount(this.store, hit.entry, dir, { signal: this.opts.signal, warn: (m) => this.warn(m) });
        if (restored) this.opts.emit({ type: "cache-mount-restored", time: Date.now(), id: hit.entry.id, source: hit.source, size: hit.entry.layer.size });
      })();
      this.mountRestores.set(name, restoring);
    }
    await restoring;
    return dir;
  }
  /** A warning for the end of the build (and the progress stream). */
  warn(message) {
    this.warnings.push(message);
    this.opts.emit({ type: "warning", time: Date.now(), message });
  }
  warnings = [];
  /** The images this build read (FROM, COPY --from, mounts), by the name it used and their manifest digest. */
  async baseImages() {
    const out = [];
    for (const [ref, p] of this.images) {
      const img = await p.catch(() => void 0);
      if (img) out.push({ ref, digest: img.digest });
    }
    return out;
  }
  /** Loads an image from the store, pulling it first when absent (or always with --pull). */
  image(ref) {
    let p = this.images.get(ref);
    if (!p) {
      p = this.loadImage(ref);
      this.images.set(ref, p);
    }
    return p;
  }
  async loadImage(ref) {
    let desc = this.opts.pull ? void 0 : await this.store.resolve(ref);
    if (!desc && this.opts.registry && isReference(ref)) {
      try {
        await pullToStore(this.store, ref, { ...this.opts.registry, signal: this.opts.signal, lazy: true });
      } catch (e) {
        if (!(e instanceof TsbuildError)) throw e;
        throw new TsbuildError("IMAGE_NOT_FOUND", `image "${ref}" is not in the local store and pulling it failed: ${e.message}`, {
          hint: e.hint ?? `import it with "tsbuild import ROOTFS.tar -t ${ref}", or build it first`,
          cause: e
        });
      }
      desc = await this.store.resolve(ref);
    }
    if (!desc) {
      throw new TsbuildError("IMAGE_NOT_FOUND", `image "${ref}" not found in the local store`, {
        hint: `import it with "tsbuild import ROOTFS.tar -t ${ref}", pull it with "tsbuild pull ${ref}", or build it first`
      });
    }
    const img = await this.store.loadImage(ref);
    const manifest = await img.manifest();
    const d = await img.descriptor();
    const config = structuredClone(await img.config());
    return { digest: d.digest, config, layers: manifest.layers.map((l) => ({ ...l })) };
  }
  /**
   * Makes sure every layer of the stack is unpacked as a snapshot and returns the top chain id.
   * Only called when a step needs a filesystem, so a fully cached build never unpacks anything.
   */
  async ensureSnapshots(layers, diffIds2) {
    const chain2 = chainIds([...diffIds2]);
    let have = chain2.length;
    while (have > 0 && !this.unpacked.has(chain2[have - 1]) && !await this.snapshots.has(chain2[have - 1])) have--;
    for (const id of chain2.slice(0, have)) this.unpacked.add(id);
    for (let i = have; i < chain2.length; i++) {
      const id = chain2[i];
      if (await this.snapshots.has(id)) {
        this.unpacked.add(id);
        continue;
      }
      const layer = layers[i];
      if (!layer) throw new TsbuildError("IMAGE_INVALID", `image has ${diffIds2.length} diff_ids but ${layers.length} layers`);
      await this.snapshots.unpack(id, chain2[i - 1], async (dir) => {
        const blob = await this.store.openBlob(layer.digest);
        const tar = layer.mediaType === MediaType.OciLayer || layer.mediaType === MediaType.DockerLayer ? blob : decompress(blob);
        await apply(tar, dir, { signal: this.opts.signal, overlay: this.snapshots.lowerFormat });
      });
      this.unpacked.add(id);
    }
    return chain2.at(-1);
  }
};
function isReference(ref) {
  try {
    parseReference(ref);
    return true;
  } catch {
    return false;
  }
}

// packages/builder/src/stage.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/builder/src/steps/config.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/builder/src/history.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function goQuoteList(args) {
  return `[${args.map((a) => JSON.stringify(a)).join(" ")}]`;
}
function commandArgs(cmd, shell) {
  return cmd.form === "exec" ? [...cmd.args] : [...shell, cmd.command];
}
function runCreatedBy(args, buildArgs) {
  const prefix = buildArgs.length > 0 ? `|${buildArgs.length} ${buildArgs.map(([k, v]) => `${k}=${v}`).join(" ")} ` : "";
  return `RUN ${prefix}${args.join(" ")}`;
}

// packages/builder/src/state.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var DEFAULT_PATH3 = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
var DEFAULT_SHELL = ["/bin/sh", "-c"];
function diffIds(s) {
  return s.config.rootfs.diff_ids;
}
function topChain(s) {
  return chainIds(diffIds(s)).at(-1);
}
function containerConfig2(s) {
  return s.config.config ??= {};
}
function cloneState(s) {
  return {
    config: structuredClone(s.config),
    layers: s.layers.map((l) => ({ ...l })),
    key: s.key,
    args: new Map(s.args),
    cmdSet: s.cmdSet
  };
}
function envList(s) {
  return containerConfig2(s).Env ?? [];
}
function envMap(s) {
  const m = /* @__PURE__ */ new Map();
  for (const kv of envList(s)) {
    const eq = kv.indexOf("=");
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
    else m.set(kv, "");
  }
  return m;
}
function setEnv(s, key, value) {
  const c = containerConfig2(s);
  const list = (c.Env ?? []).filter((kv) => kv !== key && !kv.startsWith(`${key}=`));
  list.push(`${key}=${value}`);
  c.Env = list;
}
function expansionEnv(s) {
  const m = new Map(s.args);
  for (const [k, v] of envMap(s)) m.set(k, v);
  return m;
}
function addHistory(s, entry) {
  (s.config.history ??= []).push(entry);
}
function shellOf(s) {
  const sh = containerConfig2(s).Shell;
  return sh && sh.length > 0 ? sh : DEFAULT_SHELL;
}

// packages/builder/src/trace.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var target = process.env.TSBUILD_TRACE;
var spans = [];
var tracing = target !== void 0 && target !== "";
async function span(name, fn) {
  if (!tracing) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    spans.push({ name, start, end: performance.now() });
  }
}

// packages/builder/src/steps/config.ts
async function configStep(kit, state, raw, ctx) {
  const next = cloneState(state);
  let createdBy;
  let keyParts;
  if (raw.kind === "arg") {
    createdBy = declareArgs(kit, next, raw);
    keyParts = ["arg", raw.args.map((a) => a.key)];
  } else {
    const { inst, used } = kit.expand(next, raw);
    keyParts = [inst.kind, configKeyOf(inst), used];
    if (ctx) ctx.inputs = { values: Object.fromEntries(used) };
    createdBy = applyConfig(kit, next, inst);
  }
  next.key = cacheKey([state.key, ...keyParts]);
  const rec = await span("cache.lookup", () => kit.configRecord(next.key));
  addHistory(next, { created: rec.created, created_by: createdBy, comment: "tsbuild", empty_layer: true });
  kit.journal(state, next, { v: 1, created: rec.created });
  return { state: next, cached: rec.cached };
}
function declareArgs(kit, next, raw) {
  const names2 = [];
  for (const a of raw.args) {
    let value;
    if (Object.hasOwn(kit.env.buildArgs, a.key)) {
      value = kit.env.buildArgs[a.key];
      kit.env.consumed.add(a.key);
    } else if (a.value !== void 0) {
      value = kit.expand(next, { ...raw, args: [{ key: a.key, value: a.value }] }).inst.args[0]?.value ?? "";
    } else if (kit.env.globalArgs.has(a.key)) {
      value = kit.env.globalArgs.get(a.key);
    }
    if (value !== void 0) next.args.set(a.key, value);
    else next.args.delete(a.key);
    names2.push(value !== void 0 ? `${a.key}=${value}` : a.key);
  }
  return `ARG ${names2.join(" ")}`;
}
function configKeyOf(inst) {
  const { range: _r, original: _o, ...rest } = inst;
  return rest;
}
function applyConfig(kit, next, inst) {
  const c = containerConfig2(next);
  switch (inst.kind) {
    case "env":
      for (const kv of inst.env) setEnv(next, kv.key, kv.value);
      return `ENV ${inst.env.map((kv) => `${kv.key}=${kv.value}`).join(" ")}`;
    case "label":
      c.Labels = { ...c.Labels ?? {} };
      for (const kv of inst.labels) c.Labels[kv.key] = kv.value;
      return `LABEL ${inst.labels.map((kv) => `${kv.key}=${kv.value}`).join(" ")}`;
    case "maintainer":
      next.config.author = inst.maintainer;
      return `MAINTAINER ${inst.maintainer}`;
    case "expose": {
      c.ExposedPorts = { ...c.ExposedPorts ?? {} };
      const ports = exposedPorts(inst, (m) => kit.fail(inst, m));
      for (const p of ports) c.ExposedPorts[p] = {};
      return `EXPOSE ${ports.join(" ")}`;
    }
    case "volume":
      c.Volumes = { ...c.Volumes ?? {} };
      for (const v of inst.volumes) {
        if (v.trim() === "") throw kit.fail(inst, "VOLUME specified can not be an empty string");
        c.Volumes[v] = {};
      }
      return `VOLUME [${inst.volumes.join(" ")}]`;
    case "user":
      c.User = inst.user;
      return `USER ${inst.user}`;
    case "stopsignal":
      c.StopSignal = inst.signal;
      return `STOPSIGNAL ${inst.signal}`;
    case "shell":
      c.Shell = [...inst.shell];
      return `SHELL [${inst.shell.join(" ")}]`;
    case "cmd":
      c.Cmd = commandArgs(inst.cmd, shellOf(next));
      next.cmdSet = true;
      return `CMD ${goQuoteList(c.Cmd)}`;
    case "entrypoint":
      c.Entrypoint = commandArgs(inst.cmd, shellOf(next));
      if (!next.cmdSet) c.Cmd = null;
      return `ENTRYPOINT ${goQuoteList(c.Entrypoint)}`;
    case "healthcheck":
      return applyHealthcheck(c, inst);
    case "onbuild":
      c.OnBuild = [...c.OnBuild ?? [], inst.expression];
      return `ONBUILD ${inst.expression}`;
    default:
      throw kit.fail(inst, `${inst.kind.toUpperCase()} is not a configuration instruction`);
  }
}
function exposedPorts(inst, fail2) {
  const out = [];
  for (const spec of inst.ports) {
    const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(spec.trim());
    if (!m) throw fail2(`EXPOSE: invalid port "${spec}": expected PORT[-PORT][/tcp|udp|sctp]`);
    const a = Number(m[1]);
    const b = m[2] !== void 0 ? Number(m[2]) : a;
    const proto = (m[3] ?? "tcp").toLowerCase();
    if (a < 0 || b > 65535 || b < a) throw fail2(`EXPOSE: invalid port range "${spec}"`);
    for (let p = a; p <= b; p++) out.push(`${p}/${proto}`);
  }
  return out;
}
function applyHealthcheck(c, inst) {
  if (inst.test.type === "none") {
    c.Healthcheck = { Test: ["NONE"] };
    return "HEALTHCHECK NONE";
  }
  const cmd = inst.test.cmd;
  const test = cmd.form === "exec" ? ["CMD", ...cmd.args] : ["CMD-SHELL", cmd.command];
  const h = { Test: test };
  if (inst.interval !== void 0) h.Interval = inst.interval;
  if (inst.timeout !== void 0) h.Timeout = inst.timeout;
  if (inst.startPeriod !== void 0) h.StartPeriod = inst.startPeriod;
  if (inst.startInterval !== void 0) h.StartInterval = inst.startInterval;
  if (inst.retries !== void 0) h.Retries = inst.retries;
  c.Healthcheck = h;
  const opts = [
    inst.interval !== void 0 ? `--interval=${formatDuration(inst.interval)}` : "",
    inst.timeout !== void 0 ? `--timeout=${formatDuration(inst.timeout)}` : "",
    inst.startPeriod !== void 0 ? `--start-period=${formatDuration(inst.startPeriod)}` : "",
    inst.retries !== void 0 ? `--retries=${inst.retries}` : ""
  ].filter(Boolean);
  return `HEALTHCHECK ${opts.length ? opts.join(" ") + " " : ""}${test[0]} ${test.slice(1).join(" ")}`;
}

// packages/builder/src/steps/copy.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { copyFile, mkdir as mkdir12, readFile as readFile15, rm as rm12, writeFile as writeFile8 } from "node:fs/promises";
import { join as join21, posix as posix3 } from "node:path";
import { createHash as createHash16 } from "node:crypto";

// packages/builder/src/archive.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import fs4 from "node:fs";
import os from "node:os";
import path5 from "node:path";

// packages/builder/src/copy.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import fs3 from "node:fs";
import path4 from "node:path";

// packages/builder/src/chmod.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function invalid(spec) {
  throw new TsbuildError(
    "BAD_CHMOD",
    `invalid --chmod value "${spec}": expected an octal mode up to 07777 or symbolic clauses like u+x,g-w`
  );
}
function parseChmod(spec) {
  if (/^[0-7]+$/.test(spec)) {
    const mode = parseInt(spec, 8);
    if (mode > 4095) invalid(spec);
    return { kind: "octal", mode, text: spec };
  }
  const clauses = [];
  for (const part of spec.split(",")) {
    const m = /^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$/.exec(part);
    if (!m) invalid(spec);
    const whoText = m[1];
    const who = /* @__PURE__ */ new Set();
    for (const w of whoText) {
      if (w === "a") ["u", "g", "o"].forEach((x) => who.add(x));
      else who.add(w);
    }
    const actions = [];
    const re = /([-+=])([ugo]|[rwxXst]*)/g;
    for (const a of m[2].matchAll(re)) {
      const perms = a[2];
      const copy = perms === "u" || perms === "g" || perms === "o" ? perms : void 0;
      actions.push({ op: a[1], perms: copy ? "" : perms, copyFrom: copy });
    }
    clauses.push({ who: [...who], actions });
  }
  return { kind: "symbolic", clauses, text: spec };
}
var SHIFT = { u: 6, g: 3, o: 0 };
function applyChmod(mode, spec, isDir) {
  const type = mode & ~4095;
  if (spec.kind === "octal") return type | spec.mode;
  let perm = mode & 4095;
  for (const clause of spec.clauses) {
    const who = clause.who.length > 0 ? clause.who : ["u", "g", "o"];
    for (const action of clause.actions) {
      let bits = 0;
      if (action.copyFrom) {
        const rwx = perm >> SHIFT[action.copyFrom] & 7;
        for (const w of who) bits |= rwx << SHIFT[w];
      } else {
        for (const p of action.perms) {
          for (const w of who) {
            if (p === "r") bits |= 4 << SHIFT[w];
            else if (p === "w") bits |= 2 << SHIFT[w];
            else if (p === "x") bits |= 1 << SHIFT[w];
            else if (p === "X") {
              if (isDir || (perm & 73) !== 0) bits |= 1 << SHIFT[w];
            } else if (p === "s") {
              if (w === "u") bits |= 2048;
              if (w === "g") bits |= 1024;
            } else if (p === "t") {
              if (w === "o") bits |= 512;
            }
          }
        }
      }
      if (action.op === "+") perm |= bits;
      else if (action.op === "-") perm &= ~bits;
      else {
        let clear = 0;
        for (const w of who) {
          clear |= 7 << SHIFT[w];
          if (w === "u") clear |= 2048;
          if (w === "g") clear |= 1024;
          if (w === "o") clear |= 512;
        }
        if (isDir) clear &= ~3072 | bits & 3072;
        perm = perm & ~clear | bits;
      }
    }
  }
  return type | perm;
}

// packages/builder/src/copy.ts
var ROOT_OWNER = { uid: 0, gid: 0 };
var CopyError = class extends TsbuildError {
  constructor(message, options = {}) {
    super("COPY", message, options);
  }
};
async function copyInto(ctx, matches, rootfs, dest, opts) {
  const root = fs3.realpathSync(rootfs);
  const c = new Copier(root, opts);
  c.checkCancel();
  if (matches.length === 0) return { entries: 0 };
  const destIsDir = opts.parents === true || dest === "" || dest === "." || dest.endsWith("/") || dest.endsWith("/.");
  const imageDest = dest.startsWith("/") ? dest : path4.posix.join(opts.workdir || "/", dest);
  const rel = cleanRel(imageDest);
  const sources = new Set(matches.map((m) => m.source));
  if (!destIsDir && (matches.length > 1 || sources.size > 1)) {
    const existing = statOrUndefined2(secureJoin(root, rel, { followLast: true }));
    if (!existing?.isDirectory()) {
      throw new CopyError(
        `when using COPY with more than one source file, the destination must be a directory and end with a / (got "${dest}")`
      );
    }
  }
  c.mkdirAll(destIsDir ? rel : path4.posix.dirname(rel));
  const destAbs = secureJoin(root, rel, { followLast: true });
  const xattrScans = [];
  try {
    for (const match of matches) {
      if (opts.keepOwnership) xattrScans.push(readXattrTree(match.realPath, { keep: keepXattr, signal: opts.signal }));
      const entries = ctx.walk(match);
      if (opts.parents) await c.copyWithParents(ctx, match, entries, destAbs);
      else await c.copyMatch(match, entries, destAbs);
    }
    c.finish();
  } catch (e) {
    await Promise.allSettled(xattrScans);
    throw e;
  }
  if (xattrScans.length > 0) {
    const writes = [];
    for (const table of await Promise.all(xattrScans)) {
      for (const [src, attrs] of table) {
        const to = c.targetOf(src);
        if (to !== void 0) writes.push([to, attrs]);
      }
    }
    await writeXattrs(writes, { signal: opts.signal });
  }
  return { entries: c.count };
}
function keepXattr(_path, name) {
  return !name.startsWith("trusted.overlay.") && !name.startsWith("user.overlay.") && !name.startsWith("user.fuseoverlayfs.") && name !== "security.selinux";
}
function statOrUndefined2(p) {
  try {
    return fs3.statSync(p, { throwIfNoEntry: false });
  } catch {
    return void 0;
  }
}
var Copier = class {
  count = 0;
  links = /* @__PURE__ */ new Map();
  dirs = [];
  /** Source path → where it was written, for entries that carry their xattrs along. */
  targets = /* @__PURE__ */ new Map();
  root;
  opts;
  constructor(root, opts) {
    this.root = root;
    this.opts = opts;
  }
  targetOf(src) {
    return this.targets.get(src);
  }
  imagePath(abs) {
    return abs === this.root ? "/" : abs.slice(this.root.length);
  }
  checkCancel() {
    if (this.opts.signal?.aborted) throw new CancelledError("copy cancelled", { cause: this.opts.signal.reason });
  }
  /** Creates `rel` and its missing parents (0755, `chown` or root), following the image's symlinks inside the root. */
  mkdirAll(rel) {
    const target2 = secureJoin(this.root, rel, { followLast: true });
    const owner = this.opts.chown ?? ROOT_OWNER;
    let cur = this.root;
    for (const part of target2.slice(this.root.length).split("/")) {
      if (part === "") continue;
      cur += "/" + part;
      const st = lstatOrUndefined2(cur);
      if (st === void 0) {
        fs3.mkdirSync(cur, 493);
        fs3.chmodSync(cur, 493);
        fs3.lchownSync(cur, owner.uid, owner.gid);
        this.count++;
      } else if (!st.isDirectory()) {
        throw new CopyError(`cannot create directory ${this.imagePath(target2)}: ${this.imagePath(cur)} is not a directory`);
      }
    }
    return target2;
  }
  async copyMatch(match, entries, destAbs) {
    const destSt = statOrUndefined2(destAbs);
    if (match.kind === "dir") {
      if (destSt === void 0) this.mkdirAll(destAbs.slice(this.root.length));
      else if (!destSt.isDirectory()) throw new CopyError(`cannot copy to non-directory: ${this.imagePath(destAbs)}`);
      await this.copyEntries(entries, 1, destAbs, true);
      return;
    }
    const target2 = destSt?.isDirectory() ? destAbs + "/" + path4.posix.basename(match.path) : destAbs;
    await this.copyEntries(entries, 0, target2, true);
  }
  async copyWithParents(ctx, match, entries, destAbs) {
    const underPivot = match.pivot !== "" && (match.path === match.pivot || match.path.startsWith(match.pivot + "/"));
    const relPath = underPivot ? match.path.slice(match.pivot.length).replace(/^\//, "") : match.path;
    const parts = relPath === "" ? [] : relPath.split("/");
    let target2 = destAbs;
    for (let i = 0; i < parts.length - 1; i++) {
      target2 += "/" + parts[i];
      const srcDir = secureJoin(ctx.root, [match.pivot, ...parts.slice(0, i + 1)].join("/"), { followLast: true });
      const st = lstatOrUndefined2(target2);
      if (st === void 0) {
        fs3.mkdirSync(target2, 448);
        this.count++;
        this.dirs.push({ target: target2, stat: fs3.statSync(srcDir, { bigint: true }) });
      } else if (!st.isDirectory()) {
        throw new CopyError(`cannot copy to non-directory: ${this.imagePath(target2)}`);
      }
    }
    if (parts.length > 0) target2 += "/" + parts[parts.length - 1];
    if (target2 === destAbs && match.kind === "dir") {
      await this.copyEntries(entries, 1, destAbs, true);
      return;
    }
    await this.copyEntries(entries, 0, target2, true);
  }
  /** Copies entries[from..]; an entry with relative path `rel` lands at `target/rel`. */
  async copyEntries(entries, from, target2, overwriteMeta) {
    for (let i = from; i < entries.length; i++) {
      if ((i & 1023) === 0) {
        await new Promise((resolve3) => setImmediate(resolve3));
        this.checkCancel();
      }
      const e = entries[i];
      this.copyEntry(e, e.rel === "" ? target2 : target2 + "/" + e.rel, overwriteMeta);
    }
  }
  copyEntry(e, to, overwriteMeta) {
    const existing = lstatOrUndefined2(to);
    if (e.kind === "dir") {
      let created = false;
      if (existing === void 0) {
        fs3.mkdirSync(to, 448);
        created = true;
        this.count++;
      } else if (!existing.isDirectory()) {
        throw new CopyError(`cannot copy to non-directory: ${this.imagePath(to)}`);
      }
      if (created || overwriteMeta) {
        this.dirs.push({ target: to, stat: e.stat });
        if (this.opts.keepOwnership) this.targets.set(e.abs, to);
      }
      return;
    }
    if (existing?.isDirectory()) throw new CopyError(`cannot replace directory ${this.imagePath(to)} with a file`);
    if (existing !== void 0) fs3.unlinkSync(to);
    this.count++;
    if (this.opts.keepOwnership) this.targets.set(e.abs, to);
    if (e.kind === "symlink") {
      fs3.symlinkSync(e.linkTarget, to);
      this.applyMeta(to, e.stat, "symlink");
      return;
    }
    if (e.stat.nlink > 1n) {
      const key = `${e.stat.dev}:${e.stat.ino}`;
      const first = this.links.get(key);
      if (first !== void 0) {
        this.targets.delete(e.abs);
        fs3.linkSync(first, to);
        return;
      }
      this.links.set(key, to);
    }
    try {
      fs3.copyFileSync(e.abs, to);
    } catch (err) {
      throw new CopyError(`cannot copy ${e.abs} to ${this.imagePath(to)}: ${err.message}`, { cause: err });
    }
    this.applyMeta(to, e.stat, "file");
  }
  applyMeta(to, st, kind2) {
    const owner = this.opts.chown ?? (this.opts.keepOwnership ? { uid: Number(st.uid), gid: Number(st.gid) } : ROOT_OWNER);
    fs3.lchownSync(to, owner.uid, owner.gid);
    if (kind2 !== "symlink") {
      const mode = Number(st.mode);
      const perm = this.opts.chmod ? applyChmod(mode, this.opts.chmod, kind2 === "dir") & 4095 : mode & 4095;
      fs3.chmodSync(to, perm);
    }
    fs3.lutimesSync(to, Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
  }
  /** Directory metadata last, deepest first, so writing their contents does not bump their mtimes. */
  finish() {
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i];
      this.applyMeta(d.target, d.stat, "dir");
    }
  }
};

// packages/builder/src/archive.ts
function readHead(file, n) {
  const fd = fs4.openSync(file, "r");
  try {
    const buf = Buffer.alloc(n);
    const got = fs4.readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, got);
  } finally {
    fs4.closeSync(fd);
  }
}
function openDecompressed(file, opts = {}) {
  const kind2 = sniffArchiveCompression(readHead(file, 6));
  if (kind2 === "none") return fs4.createReadStream(file);
  return decompressAs(fs4.createReadStream(file), kind2, {
    signal: opts.signal,
    errorMessage: (reason) => `cannot decompress ${path5.basename(file)} (${kind2}): ${reason}`
  });
}
var MISSING = /* @__PURE__ */ new Set(["MISSING_TOOL", "ZSTD_UNAVAILABLE"]);
async function isArchive(file, opts = {}) {
  const head = readHead(file, 512);
  if (sniffArchiveCompression(head) === "none") return isTarHeader(head);
  const stream = openDecompressed(file, opts);
  const parts = [];
  let have = 0;
  try {
    for await (const chunk of stream) {
      parts.push(chunk);
      have += chunk.length;
      if (have >= 512) break;
    }
  } catch (e) {
    if (e instanceof TsbuildError && MISSING.has(e.code)) throw e;
    return false;
  } finally {
    stream.destroy();
  }
  return isTarHeader(Buffer.concat(parts).subarray(0, 512));
}
async function extractArchive(file, destDir, opts = {}) {
  const staging = await fs4.promises.mkdtemp(path5.join(opts.tmpDir ?? os.tmpdir(), "tsbuild-add-"));
  try {
    await apply(openDecompressed(file, { signal: opts.signal }), staging, { signal: opts.signal });
    await fs4.promises.mkdir(destDir, { recursive: true });
    const ctx = await BuildContext.open(staging, { ignore: NO_IGNORE });
    const matches = await ctx.resolveSources(["."]);
    const copyOpts = { workdir: "/", keepOwnership: true };
    if (opts.chown) copyOpts.chown = opts.chown;
    if (opts.signal) copyOpts.signal = opts.signal;
    const r = await copyInto(ctx, matches, destDir, "/", copyOpts);
    return { entries: r.entries };
  } finally {
    await fs4.promises.rm(staging, { recursive: true, force: true });
  }
}

// packages/builder/src/chown.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile14 } from "node:fs/promises";
var ID = /^[0-9]+$/;
var MAX_ID = 4294967295 - 1;
function parseId(text, what, spec) {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > MAX_ID) {
    throw new TsbuildError("BAD_USER", `invalid ${what} id "${text}" in "${spec}"`);
  }
  return n;
}
async function readImageFile(rootfs, file) {
  const abs = secureJoin(rootfs, file, { followLast: true });
  try {
    return await readFile14(abs, "utf8");
  } catch (e) {
    const code = e.code;
    if (code === "ENOENT" || code === "ENOTDIR") return void 0;
    throw new TsbuildError("IMAGE_FILE", `cannot read ${file} in the image: ${e.message}`, { cause: e });
  }
}
function parsePasswd(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(":");
    if (f.length < 4 || f[0] === "" || !ID.test(f[2] ?? "") || !ID.test(f[3] ?? "")) continue;
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? "" });
  }
  return out;
}
function parseGroup(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(":");
    if (f.length < 3 || f[0] === "" || !ID.test(f[2] ?? "")) continue;
    const members = (f[3] ?? "").split(",").map((m) => m.trim()).filter((m) => m !== "");
    out.push({ name: f[0], gid: Number(f[2]), members });
  }
  return out;
}
function splitSpec(spec) {
  const trimmed = spec.trim();
  if (trimmed === "") throw new TsbuildError("BAD_USER", "empty user specification");
  const i = trimmed.indexOf(":");
  if (i < 0) return [trimmed, void 0];
  const user = trimmed.slice(0, i);
  const group2 = trimmed.slice(i + 1);
  if (user === "" || group2 === "") throw new TsbuildError("BAD_USER", `invalid user specification "${spec}"`);
  return [user, group2];
}
async function lookupGroup(rootfs, group2, spec) {
  if (ID.test(group2)) return parseId(group2, "group", spec);
  const text = await readImageFile(rootfs, "/etc/group");
  if (text === void 0) {
    throw new TsbuildError("UNKNOWN_GROUP", `unable to find group ${group2}: the image has no /etc/group`);
  }
  const hit = parseGroup(text).find((g) => g.name === group2);
  if (!hit) throw new TsbuildError("UNKNOWN_GROUP", `unable to find group ${group2}: no matching entry in /etc/group`);
  return hit.gid;
}
async function resolveChown(spec, rootfs) {
  const [user, group2] = splitSpec(spec);
  let uid;
  let gid;
  if (ID.test(user)) {
    uid = parseId(user, "user", spec);
    gid = uid;
  } else {
    const text = await readImageFile(rootfs, "/etc/passwd");
    if (text === void 0) {
      throw new TsbuildError("UNKNOWN_USER", `unable to find user ${user}: the image has no /etc/passwd`);
    }
    const hit = parsePasswd(text).find((p) => p.name === user);
    if (!hit) throw new TsbuildError("UNKNOWN_USER", `unable to find user ${user}: no matching entry in /etc/passwd`);
    uid = hit.uid;
    gid = hit.gid;
  }
  if (group2 !== void 0) gid = await lookupGroup(rootfs, group2, spec);
  return { uid, gid };
}
async function resolveUser(spec, rootfs) {
  const [user, group2] = splitSpec(spec);
  const passwdText = await readImageFile(rootfs, "/etc/passwd");
  const passwd = passwdText === void 0 ? [] : parsePasswd(passwdText);
  let entry;
  let uid;
  let gid = 0;
  if (ID.test(user)) {
    uid = parseId(user, "user", spec);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === user);
    if (!entry) {
      const why = passwdText === void 0 ? "the image has no /etc/passwd" : "no matching entry in /etc/passwd";
      throw new TsbuildError("UNKNOWN_USER", `unable to find user ${user}: ${why}`);
    }
    uid = entry.uid;
  }
  if (entry) gid = entry.gid;
  const additionalGids = [];
  if (group2 !== void 0) {
    gid = await lookupGroup(rootfs, group2, spec);
  } else if (entry) {
    const groupText = await readImageFile(rootfs, "/etc/group");
    if (groupText !== void 0) {
      for (const g of parseGroup(groupText)) {
        if (g.members.includes(entry.name) && g.gid !== gid && !additionalGids.includes(g.gid)) additionalGids.push(g.gid);
      }
    }
  }
  const home = entry?.home && entry.home.startsWith("/") ? entry.home : uid === 0 ? "/root" : "/";
  return { uid, gid, additionalGids, home };
}

// packages/builder/src/copy-layer.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import fs5 from "node:fs";
import path6 from "node:path";
var ROOT_OWNER2 = { uid: 0, gid: 0 };
var SURROGATE = /[\ud800-\udfff]/;
function secondsOf(st) {
  const ns = st.mtimeNs;
  return Number(ns >= 0n ? ns / 1000000000n : -((-ns + 999999999n) / 1000000000n));
}
function splitRel(rel) {
  return rel === "" ? [] : rel.split("/");
}
function dirOf(rel) {
  const i = rel.lastIndexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}
function baseOf(rel) {
  return rel.slice(rel.lastIndexOf("/") + 1);
}
function join19(rel, name) {
  return rel === "" ? name : rel + "/" + name;
}
function shown(rel) {
  return "/" + rel;
}
var CopyLayerPlan = class {
  /** Entries written, as `copyInto` counts them. */
  count = 0;
  root;
  /** Every directory of the changeset by path: entries come in walk order, so most lookups start at their parent. */
  dirs = /* @__PURE__ */ new Map();
  lower;
  now;
  /**
   * `parent`: the parent filesystem, as a directory (a read-only view) or a tree read another way
   * (the parent's layers merged without a mount), or undefined for an empty one (COPY --link, FROM
   * scratch). `now`: the mtime, in seconds, of directories the copy creates or adds names to (the
   * moment the copy runs).
   */
  constructor(parent, opts = {}) {
    this.lower = typeof parent === "string" ? new DirTree(fs5.realpathSync(parent)) : parent;
    this.now = opts.now ?? Math.floor(Date.now() / 1e3);
    const ino = { mode: 493, uid: 0, gid: 0, mtime: this.now, xattrs: void 0, source: void 0, size: 0 };
    this.root = { kind: "dir", ino, linkTarget: void 0, lower: this.lower !== void 0, kids: /* @__PURE__ */ new Map() };
    this.dirs.set("", this.root);
  }
  // -------------------------------------------------------------------------------------------
  // The merged view: the changeset over the parent
  lowerStat(rel) {
    return this.lower.lstat(rel);
  }
  /** lstat of `rel` as the merged filesystem would answer it. */
  lookup(rel) {
    if (rel !== "") {
      const parent = this.dirs.get(dirOf(rel));
      if (parent !== void 0) {
        const kid = parent.kids.get(baseOf(rel));
        if (kid !== void 0) return { upper: kid };
        if (!parent.lower) return void 0;
        const st = this.lowerStat(rel);
        return st === void 0 ? void 0 : { lower: st };
      }
    }
    const parts = splitRel(rel);
    let node2 = this.root;
    for (let i = 0; i < parts.length; i++) {
      const kid = node2.kids?.get(parts[i]);
      if (kid !== void 0) {
        node2 = kid;
        continue;
      }
      if (node2.kind !== "dir" || !node2.lower) return void 0;
      let cur = parts.slice(0, i).join("/");
      let st;
      for (let j = i; j < parts.length; j++) {
        if (st !== void 0 && !st.isDirectory()) return void 0;
        cur = join19(cur, parts[j]);
        st = this.lowerStat(cur);
        if (st === void 0) return void 0;
      }
      return { lower: st };
    }
    return { upper: node2 };
  }
  isDir(f) {
    return f !== void 0 && (f.upper ? f.upper.kind === "dir" : f.lower.isDirectory());
  }
  /** The changeset's node of an existing directory, copying it (and its ancestors) up from the parent. */
  upperDir(rel) {
    const known2 = this.dirs.get(rel);
    if (known2 !== void 0) return known2;
    let node2 = this.root;
    let cur = "";
    for (const part of splitRel(rel)) {
      cur = join19(cur, part);
      let kid = node2.kids?.get(part);
      if (kid === void 0) {
        const st = node2.lower ? this.lowerStat(cur) : void 0;
        if (st === void 0 || !st.isDirectory()) throw new InternalError(`copy plan: ${shown(cur)} is not a directory of the parent`);
        kid = {
          kind: "dir",
          ino: {
            mode: st.mode & 4095,
            uid: st.uid,
            gid: st.gid,
            mtime: Math.floor(st.mtimeMs / 1e3),
            xattrs: readXattrs(this.lower.host(cur), (_p, name) => !isOverlayXattr3(name)),
            source: void 0,
            size: 0
          },
          linkTarget: void 0,
          lower: true,
          kids: /* @__PURE__ */ new Map()
        };
        node2.kids.set(part, kid);
        this.dirs.set(cur, kid);
      } else if (kid.kind !== "dir") {
        throw new InternalError(`copy plan: ${shown(cur)} is not a directory`);
      }
      node2 = kid;
    }
    return node2;
  }
  /** Puts `node` at `rel` (creating or replacing a name, which sets the directory's mtime). */
  place(rel, node2) {
    const parent = this.upperDir(dirOf(rel));
    parent.kids.set(baseOf(rel), node2);
    parent.ino.mtime = this.now;
  }
  newDir(rel, mode, owner) {
    const node2 = {
      kind: "dir",
      ino: { mode, uid: owner.uid, gid: owner.gid, mtime: this.now, xattrs: void 0, source: void 0, size: 0 },
      linkTarget: void 0,
      lower: false,
      kids: /* @__PURE__ */ new Map()
    };
    this.place(rel, node2);
    this.dirs.set(rel, node2);
    return node2;
  }
  /**
   * Resolves an image path as `secureJoin` over the root with `followLast` does: the parent's
   * symlinks are followed inside the root. The changeset holds no symlink on such a path when a
   * copy resolves its destination (sources are written after it), which the check makes sure of.
   */
  resolve(rel) {
    let out;
    const lower = this.lower;
    if (lower === void 0) out = cleanRel(rel);
    else out = secureJoin("/", rel, { followLast: true, symlinkTarget: (r) => lower.symlinkTarget(r) }).slice(1);
    let node2 = this.root;
    for (const part of splitRel(out)) {
      node2 = node2.kids?.get(part);
      if (node2 === void 0) break;
      if (node2.kind === "symlink") throw new InternalError(`copy plan: ${shown(out)} passes through a symlink the step wrote`);
    }
    return out;
  }
  // -------------------------------------------------------------------------------------------
  // copyInto, rule for rule
  /**
   * What `copyInto(ctx, matches, rootfs, dest, opts)` would do to the overlay, done to the plan.
   * `walks[i]`, when given, is `ctx.walk(matches[i])` already done (for the cache key).
   */
  async copy(ctx, matches, dest, opts, walks) {
    const op = new CopyOp(this, ctx, opts);
    op.checkCancel();
    if (matches.length === 0) return;
    const destIsDir = opts.parents === true || dest === "" || dest === "." || dest.endsWith("/") || dest.endsWith("/.");
    const imageDest = dest.startsWith("/") ? dest : path6.posix.join(opts.workdir || "/", dest);
    const rel = cleanRel(imageDest);
    const sources = new Set(matches.map((m) => m.source));
    if (!destIsDir && (matches.length > 1 || sources.size > 1)) {
      if (!this.isDir(this.lookup(this.resolve(rel)))) {
        throw new CopyError(
          `when using COPY with more than one source file, the destination must be a directory and end with a / (got "${dest}")`
        );
      }
    }
    op.mkdirAll(destIsDir ? rel : cleanRel(path6.posix.dirname(rel)));
    const destRel = this.resolve(rel);
    for (let i = 0; i < matches.length; i++) {
      const match = matches[i];
      const entries = walks?.[i] ?? ctx.walk(match);
      if (opts.parents) await op.copyWithParents(match, entries, destRel);
      else await op.copyMatch(match, entries, destRel);
    }
    op.finish();
  }
  /** For CopyOp: the pieces of the merged view it works with. */
  get view() {
    return {
      lookup: (rel) => this.lookup(rel),
      isDir: (f) => this.isDir(f),
      resolve: (rel) => this.resolve(rel),
      place: (rel, node2) => this.place(rel, node2),
      newDir: (rel, mode, owner) => this.newDir(rel, mode, owner),
      upperDir: (rel) => this.upperDir(rel)
    };
  }
  // -------------------------------------------------------------------------------------------
  // The archive
  /** The changeset as layer entries, in archive order, made as the archive is written. */
  *entries(observe) {
    const first = /* @__PURE__ */ new Map();
    const stack = [{ kids: sortedKids(this.root), i: 0, prefix: "" }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const kid = top.kids[top.i++];
      if (kid === void 0) {
        stack.pop();
        continue;
      }
      const { name, node: node2 } = kid;
      const p = top.prefix + name;
      const ino = node2.ino;
      const header = { path: p, type: "file", mode: ino.mode, uid: ino.uid, gid: ino.gid, mtime: ino.mtime, size: 0 };
      if (ino.xattrs && ino.xattrs.size > 0) header.xattrs = ino.xattrs;
      if (node2.kind === "dir") {
        header.path = p + "/";
        header.type = "dir";
        yield { header };
        stack.push({ kids: sortedKids(node2), i: 0, prefix: p + "/" });
        continue;
      }
      const linked = first.get(ino);
      if (linked !== void 0) {
        header.type = "hardlink";
        header.linkpath = linked;
        yield { header };
        continue;
      }
      first.set(ino, p);
      if (node2.kind === "symlink") {
        header.type = "symlink";
        header.mode = 511;
        header.linkpath = node2.linkTarget;
        yield { header };
        continue;
      }
      const source = ino.source;
      header.size = ino.size;
      const entry = { header, body: source.abs };
      const onBody = observe?.(source);
      if (onBody) entry.onBody = onBody;
      yield entry;
    }
  }
  /** Writes the changeset to `out` as a layer tar (and ends `out`). */
  write(out, opts = {}) {
    const { observe, ...wopts } = opts;
    return writeEntries(this.entries(observe), out, wopts);
  }
};
var CopyOp = class {
  constructor(plan, ctx, opts) {
    this.plan = plan;
    this.ctx = ctx;
    this.opts = opts;
    this.v = plan.view;
  }
  plan;
  ctx;
  opts;
  links = /* @__PURE__ */ new Map();
  dirs = [];
  v;
  checkCancel() {
    if (this.opts.signal?.aborted) throw new CancelledError("copy cancelled", { cause: this.opts.signal.reason });
  }
  mkdirAll(rel) {
    const target2 = this.v.resolve(rel);
    const owner = this.opts.chown ?? ROOT_OWNER2;
    let cur = "";
    for (const part of splitRel(target2)) {
      cur = join19(cur, part);
      const found2 = this.v.lookup(cur);
      if (found2 === void 0) {
        this.v.newDir(cur, 493, owner);
        this.plan.count++;
      } else if (!this.v.isDir(found2)) {
        throw new CopyError(`cannot create directory ${shown(target2)}: ${shown(cur)} is not a directory`);
      }
    }
  }
  async copyMatch(match, entries, destRel) {
    const destFound = this.v.lookup(destRel);
    if (match.kind === "dir") {
      if (destFound === void 0) this.mkdirAll(destRel);
      else if (!this.v.isDir(destFound)) throw new CopyError(`cannot copy to non-directory: ${shown(destRel)}`);
      await this.copyEntries(entries, 1, destRel);
      return;
    }
    const target2 = this.v.isDir(destFound) ? join19(destRel, path6.posix.basename(match.path)) : destRel;
    await this.copyEntries(entries, 0, target2);
  }
  async copyWithParents(match, entries, destRel) {
    const underPivot = match.pivot !== "" && (match.path === match.pivot || match.path.startsWith(match.pivot + "/"));
    const relPath = underPivot ? match.path.slice(match.pivot.length).replace(/^\//, "") : match.path;
    const parts = relPath === "" ? [] : relPath.split("/");
    let target2 = destRel;
    for (let i = 0; i < parts.length - 1; i++) {
      target2 = join19(target2, parts[i]);
      const srcDir = secureJoin(this.ctx.root, [match.pivot, ...parts.slice(0, i + 1)].join("/"), { followLast: true });
      const found2 = this.v.lookup(target2);
      if (found2 === void 0) {
        const node2 = this.v.newDir(target2, 448, ROOT_OWNER2);
        this.plan.count++;
        this.dirs.push({ node: node2, stat: fs5.statSync(srcDir, { bigint: true }) });
      } else if (!this.v.isDir(found2)) {
        throw new CopyError(`cannot copy to non-directory: ${shown(target2)}`);
      }
    }
    if (parts.length > 0) target2 = join19(target2, parts[parts.length - 1]);
    if (target2 === destRel && match.kind === "dir") {
      await this.copyEntries(entries, 1, destRel);
      return;
    }
    await this.copyEntries(entries, 0, target2);
  }
  async copyEntries(entries, from, target2) {
    for (let i = from; i < entries.length; i++) {
      if ((i & 1023) === 0) {
        await new Promise((resolve3) => setImmediate(resolve3));
        this.checkCancel();
      }
      const e = entries[i];
      this.copyEntry(e, e.rel === "" ? target2 : join19(target2, e.rel));
    }
  }
  sourceXattrs(e) {
    return this.opts.keepOwnership ? readXattrs(e.abs, keepXattr) : void 0;
  }
  copyEntry(e, to) {
    const existing = this.v.lookup(to);
    if (e.kind === "dir") {
      let node2;
      if (existing === void 0) {
        node2 = this.v.newDir(to, 448, ROOT_OWNER2);
        this.plan.count++;
      } else if (!this.v.isDir(existing)) {
        throw new CopyError(`cannot copy to non-directory: ${shown(to)}`);
      } else {
        node2 = this.v.upperDir(to);
      }
      this.dirs.push({ node: node2, stat: e.stat });
      const attrs = this.sourceXattrs(e);
      if (attrs) node2.ino.xattrs = new Map([...node2.ino.xattrs ?? [], ...attrs]);
      return;
    }
    if (this.v.isDir(existing)) throw new CopyError(`cannot replace directory ${shown(to)} with a file`);
    this.plan.count++;
    if (e.kind === "symlink") {
      const node2 = { kind: "symlink", ino: this.meta(e.stat, "symlink", this.sourceXattrs(e)), linkTarget: e.linkTarget, lower: false, kids: void 0 };
      this.v.place(to, node2);
      return;
    }
    if (e.stat.nlink > 1n) {
      const key = `${e.stat.dev}:${e.stat.ino}`;
      const first = this.links.get(key);
      if (first !== void 0) {
        const found2 = this.v.lookup(first);
        if (!found2?.upper || found2.upper.kind !== "file") throw new CopyError(`cannot link ${shown(to)} to ${shown(first)}: it is no longer a file of this copy`);
        this.v.place(to, { kind: "file", ino: found2.upper.ino, linkTarget: void 0, lower: false, kids: void 0 });
        return;
      }
      this.links.set(key, to);
    }
    const ino = this.meta(e.stat, "file", this.sourceXattrs(e));
    ino.source = e;
    ino.size = Number(e.stat.size);
    this.v.place(to, { kind: "file", ino, linkTarget: void 0, lower: false, kids: void 0 });
  }
  /** applyMeta of copy.ts: the owner, mode and mtime an entry ends up with. */
  meta(st, kind2, xattrs) {
    const owner = this.owner(st);
    let mode = 511;
    if (kind2 !== "symlink") {
      const m = Number(st.mode);
      mode = this.opts.chmod ? applyChmod(m, this.opts.chmod, kind2 === "dir") & 4095 : m & 4095;
    }
    return { mode, uid: owner.uid, gid: owner.gid, mtime: secondsOf(st), xattrs, source: void 0, size: 0 };
  }
  owner(st) {
    return this.opts.chown ?? (this.opts.keepOwnership ? { uid: Number(st.uid), gid: Number(st.gid) } : ROOT_OWNER2);
  }
  /** Directory metadata last, in the order copy.ts applies it (the first fixup of a directory wins). */
  finish() {
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const { node: node2, stat: stat10 } = this.dirs[i];
      const m = this.meta(stat10, "dir", void 0);
      node2.ino.mode = m.mode;
      node2.ino.uid = m.uid;
      node2.ino.gid = m.gid;
      node2.ino.mtime = m.mtime;
    }
  }
};
function sortedKids(dir) {
  const kids = [];
  for (const [name, node2] of dir.kids) {
    const key = node2.kind === "dir" ? name + "/" : name;
    kids.push({ key, plain: !SURROGATE.test(key), name, node: node2 });
  }
  return kids.sort((a, b) => a.plain && b.plain ? a.key < b.key ? -1 : a.key > b.key ? 1 : 0 : compareUtf8(a.key, b.key));
}
var DirTree = class {
  constructor(root) {
    this.root = root;
  }
  root;
  host(rel) {
    return rel === "" ? this.root : `${this.root}/${rel}`;
  }
  lstat(rel) {
    return lstatOrUndefined3(this.host(rel));
  }
  symlinkTarget(rel) {
    return this.lstat(rel)?.isSymbolicLink() ? fs5.readlinkSync(this.host(rel)) : void 0;
  }
};
function isOverlayXattr3(name) {
  return name.startsWith("trusted.overlay.") || name.startsWith("user.overlay.") || name.startsWith("user.fuseoverlayfs.");
}
function lstatOrUndefined3(p) {
  try {
    return fs5.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return void 0;
  }
}

// packages/builder/src/fetch.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash15 } from "node:crypto";
import fs6 from "node:fs";
import path7 from "node:path";
import { Readable as Readable10, Transform as Transform6 } from "node:stream";
import { pipeline as pipeline9 } from "node:stream/promises";
var ALGORITHMS = { sha256: 64, sha384: 96, sha512: 128 };
var UNNAMED = "__unnamed__";
function fetchError(url, message, cause) {
  return new TsbuildError("FETCH", redactSecrets(`ADD ${url}: ${message}`), cause === void 0 ? {} : { cause });
}
function parseChecksum(checksum) {
  const m = /^([a-z0-9]+):([0-9a-f]+)$/.exec(checksum);
  const want = m ? ALGORITHMS[m[1]] : void 0;
  if (!m || want === void 0 || m[2].length !== want) {
    throw new TsbuildError("BAD_CHECKSUM", `invalid --checksum "${checksum}": expected sha256:<64 hex digits> (or sha384/sha512)`);
  }
  return [m[1], m[2]];
}
function safeName(candidate) {
  if (candidate === void 0) return void 0;
  const name = candidate.trim();
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) return void 0;
  return name;
}
function nameFromDisposition(header) {
  if (!header) return void 0;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      return void 0;
    }
  }
  const plain2 = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/.exec(header);
  if (!plain2) return void 0;
  return plain2[1] !== void 0 ? plain2[1].replace(/\\(.)/g, "$1") : plain2[2];
}
function downloadName(url, contentDisposition) {
  let base;
  try {
    base = decodeURIComponent(path7.posix.basename(url.pathname));
  } catch {
    base = path7.posix.basename(url.pathname);
  }
  return safeName(base) ?? safeName(nameFromDisposition(contentDisposition)) ?? UNNAMED;
}
async function fetchUrl(url, destDir, opts = {}) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw fetchError(url, "not a valid URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw fetchError(url, "only http and https URLs can be fetched");
  const expected = opts.checksum !== void 0 ? parseChecksum(opts.checksum) : void 0;
  const algorithm = expected?.[0] ?? "sha256";
  let res;
  try {
    res = await fetch(parsed, { redirect: "follow", signal: opts.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw new CancelledError(`download of ${redactSecrets(url)} cancelled`, { cause: e });
    const cause = e.cause;
    throw fetchError(url, `request failed: ${cause?.message ?? e.message}`, e);
  }
  if (!res.ok || res.body === null) {
    await res.body?.cancel().catch(() => {
    });
    throw fetchError(url, `server answered ${res.status} ${res.statusText}`.trim());
  }
  const name = downloadName(parsed, res.headers.get("content-disposition"));
  const final = `${destDir}/${name}`;
  const tmp = `${destDir}/.${name}.${process.pid}.partial`;
  const hash = createHash15(algorithm);
  const tee2 = new Transform6({
    transform(chunk, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    }
  });
  try {
    await pipeline9(
      Readable10.fromWeb(res.body),
      tee2,
      fs6.createWriteStream(tmp, { mode: 384 }),
      { signal: opts.signal }
    );
    const got = `${algorithm}:${hash.digest("hex")}`;
    if (expected && got !== `${expected[0]}:${expected[1]}`) {
      throw new TsbuildError(
        "CHECKSUM_MISMATCH",
        redactSecrets(`ADD ${url}: checksum mismatch: expected ${expected[0]}:${expected[1]}, got ${got}`)
      );
    }
    await fs6.promises.chmod(tmp, 384);
    const lastModified = res.headers.get("last-modified");
    const mtime = lastModified ? Date.parse(lastModified) : NaN;
    if (Number.isFinite(mtime)) await fs6.promises.utimes(tmp, mtime / 1e3, mtime / 1e3);
    await fs6.promises.rename(tmp, final);
    return final;
  } catch (e) {
    await fs6.promises.rm(tmp, { force: true });
    if (e instanceof TsbuildError) throw e;
    if (opts.signal?.aborted) throw new CancelledError(`download of ${redactSecrets(url)} cancelled`, { cause: e });
    throw fetchError(url, `download failed: ${e.message}`, e);
  }
}

// packages/builder/src/hash-ahead.ts
init_define_TSBUILD_NATIVE_VERSIONS();
var SAMPLE = 512;
function estimateUnhashed(walks, cache) {
  let totalFiles = 0;
  for (const walk2 of walks) for (const e of walk2) if (e.kind === "file") totalFiles++;
  const every = Math.max(1, Math.floor(totalFiles / SAMPLE));
  let sampled = 0;
  let missed = 0;
  let sampledBytes = 0;
  let missedBytes = 0;
  let totalBytes = 0;
  let i = 0;
  for (const walk2 of walks) {
    for (const e of walk2) {
      if (e.kind !== "file") continue;
      const size = Number(e.stat.size);
      totalBytes += size;
      if (i++ % every !== 0) continue;
      sampled++;
      sampledBytes += size;
      if (cache?.lookup(e.abs, e.stat) !== void 0) continue;
      missed++;
      missedBytes += size;
    }
  }
  if (sampled === 0) return { files: 0, bytes: 0, totalFiles, totalBytes };
  return {
    files: Math.round(missed / sampled * totalFiles),
    bytes: sampledBytes === 0 ? 0 : Math.round(missedBytes / sampledBytes * totalBytes),
    totalFiles,
    totalBytes
  };
}
function worthHashingAhead(u) {
  const big = u.files >= 256 || u.bytes >= 16 << 20;
  return big && (u.files * 2 >= u.totalFiles || u.bytes * 2 >= u.totalBytes);
}
var HashCapture = class {
  hashes = /* @__PURE__ */ new Map();
  used = [];
  /** Before the first read: the stat cache's "hashed at" for every captured file. */
  startedNs = BigInt(Date.now()) * 1000000n;
  observe = (entry) => {
    let hasher;
    return (chunk, last) => {
      if (hasher === void 0 && last) {
        this.hashes.set(entry.abs, { hash: blake3(chunk).toString("hex"), entry });
        return;
      }
      hasher ??= new Blake3Hasher();
      hasher.update(chunk);
      if (last) this.hashes.set(entry.abs, { hash: hasher.digest("hex"), entry });
    };
  };
  /** For hashSources: the captured hash, else a read of the file. */
  hashFile = (absPath, size) => {
    const got = this.hashes.get(absPath);
    if (got === void 0) return hashFileContent(absPath, size);
    this.used.push(absPath);
    return got.hash;
  };
  /**
   * Stores the captured hashes hashSources took in the stat cache with the time reading began
   * (hashSources stored them with a later one, which could make a file changed while it was read
   * look settled).
   */
  remember(cache) {
    if (!cache) return;
    for (const abs of this.used) {
      const got = this.hashes.get(abs);
      if (got) cache.store(abs, got.entry.stat, this.startedNs, got.hash);
    }
  }
};

// packages/builder/src/steps/kit.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { mkdir as mkdir11, mkdtemp as mkdtemp2, readdir as readdir10 } from "node:fs/promises";
import { join as join20, posix as posix2 } from "node:path";
var LAYER_SUFFIX = " # tsbuild";
var StepKit = class {
  constructor(env) {
    this.env = env;
    this.s = env.session;
  }
  env;
  s;
  /** A DockerfileError that points at the instruction's lines. */
  fail(inst, message, hint, cause) {
    const opts = { file: this.env.file, range: inst.range, excerpt: excerptOf(this.env.text, inst.range) };
    if (hint !== void 0) opts.hint = hint;
    if (cause !== void 0) opts.cause = cause;
    return new DockerfileError(message, opts);
  }
  /** Attributes any non-location error of a step to the step's Dockerfile line. */
  wrap(inst, e) {
    if (e instanceof DockerfileError || e instanceof CancelledError) return e;
    if (e instanceof TsbuildError) return this.fail(inst, `${inst.original.split("\n")[0]}: ${e.message}`, e.hint, e);
    const err = e;
    if (err && typeof err.code === "string") return this.fail(inst, `${inst.kind.toUpperCase()}: ${err.message}`, void 0, e);
    return e;
  }
  /** Expands an instruction's words with ARG/ENV values; returns the values it read for the key. */
  expand(state, inst) {
    const env = expansionEnv(state);
    const ex = envExpander(env, { escapeToken: this.env.escapeToken });
    const out = expandInstruction(inst, ex, { file: this.env.file, text: this.env.text });
    const used = [...ex.matched].sort().map((k) => [k, env.get(k) ?? ""]);
    return { inst: out, used };
  }
  /** A private directory under the root's state dir (removed by the caller). */
  async tempDir(prefix) {
    await mkdir11(this.s.stateDir, { recursive: true });
    return mkdtemp2(join20(this.s.stateDir, prefix));
  }
  /** Records a step that changes only the config; returns its `created` time (kept from the cache). */
  async configRecord(key) {
    const hit = await this.s.lookup(key);
    if (hit && !hit.layer) return { created: hit.created, cached: true };
    const rec = { v: 1, created: this.s.now() };
    await this.s.cache.set(key, rec);
    return { created: rec.created, cached: false };
  }
  /** Tells the session what a step produced, for --cache-to. */
  journal(parent, next, rec) {
    const history = next.config.history?.at(-1);
    const r = { key: next.key, parent: parent.key, created: rec.created, config: configChanges(parent, next) };
    if (history) r.history = history;
    if (rec.layer) r.layer = rec.layer;
    this.s.record(r);
  }
  /**
   * The shared shape of every layer step: look the key up; on a miss prepare an overlay over the
   * parent, let `work` change it, diff the upper dir into the store and commit the snapshot.
   */
  async layerStep(state, key, createdBy, work, opts = {}) {
    const next = cloneState(state);
    next.key = key;
    const hit = await span("cache.lookup", () => this.s.lookup(key));
    if (hit) return this.append(state, next, hit, createdBy, true);
    const rec = await this.s.heavy.run(async () => {
      if (opts.unchanged && await opts.unchanged()) return { v: 1, created: this.s.now() };
      const parent = opts.independent ? void 0 : await span("snapshot.unpack", () => this.s.ensureSnapshots(state.layers, diffIds(state)));
      const active = await span("snapshot.prepare", () => this.s.snapshots.prepare(parent, { signal: this.s.opts.signal }));
      let committed = false;
      try {
        await span("step.work", () => work(active));
        active.detach();
        this.s.checkAbort();
        const created = this.s.now();
        if (opts.emptyIfUnchanged && (await readdir10(active.upper)).length === 0) return { v: 1, created };
        const writer = this.s.store.blobWriter();
        let result;
        try {
          const dopts = { signal: this.s.opts.signal, lowerDirs: active.lowerDirs };
          if (this.s.opts.sourceDateEpoch !== void 0) dopts.sourceDateEpoch = this.s.opts.sourceDateEpoch;
          result = await span("layer.diff", () => diff(active.upper, writer.stream, dopts));
          await span("store.commit", () => writer.commit({ digest: result.diffId, size: result.size }));
        } catch (e) {
          await writer.abort().catch(() => {
          });
          throw e;
        }
        if (!opts.independent) {
          await span("snapshot.commit", () => active.commit(chainIds([...diffIds(state), result.diffId]).at(-1)));
          committed = true;
        }
        return { v: 1, created, layer: { diffId: result.diffId, size: result.size } };
      } finally {
        if (!committed) await active.release().catch(() => {
        });
      }
    });
    await span("cache.record", () => this.s.cache.set(key, rec));
    return this.append(state, next, rec, createdBy, false);
  }
  /**
   * A layer step whose layer is written straight into the store, without an overlay or a snapshot
   * (COPY from its sources): look the key up; on a miss `layer` writes the tar into a blob (or is
   * one written ahead, which a hit drops) and the cache records it. Nothing is unpacked: a later
   * step that needs the filesystem unpacks the blob then (`ensureSnapshots`).
   */
  async blobStep(state, key, createdBy, layer) {
    const next = cloneState(state);
    next.key = key;
    const ahead = typeof layer === "function" ? void 0 : layer;
    try {
      const hit = await span("cache.lookup", () => this.s.lookup(key));
      if (hit) return this.append(state, next, hit, createdBy, true);
      const rec = await this.s.heavy.run(async () => {
        const pending = ahead ?? await this.writeLayer(layer);
        let stored;
        try {
          this.s.checkAbort();
          stored = await span("store.commit", () => pending.commit());
        } finally {
          await pending.abort().catch(() => {
          });
        }
        return { v: 1, created: this.s.now(), layer: { diffId: stored.diffId, size: stored.size } };
      });
      await span("cache.record", () => this.s.cache.set(key, rec));
      return this.append(state, next, rec, createdBy, false);
    } finally {
      await ahead?.abort().catch(() => {
      });
    }
  }
  /** Writes a layer into the store's ingest area; the caller commits or aborts it (abort after commit does nothing). */
  async writeLayer(write) {
    const writer = this.s.store.blobWriter();
    let written;
    try {
      written = await write(writer.stream);
    } catch (e) {
      await writer.abort().catch(() => {
      });
      throw e;
    }
    let settled = false;
    return {
      async commit() {
        settled = true;
        const got = await writer.commit(written.diffId ? { digest: written.diffId, size: written.size } : { size: written.size });
        return { diffId: got.digest, size: got.size };
      },
      async abort() {
        if (settled) return;
        settled = true;
        await writer.abort();
      }
    };
  }
  append(state, next, rec, createdBy, cached) {
    if (!rec.layer) {
      addHistory(next, { created: rec.created, created_by: createdBy, comment: "tsbuild", empty_layer: true });
      this.journal(state, next, rec);
      return { state: next, cached };
    }
    next.config.rootfs.diff_ids.push(rec.layer.diffId);
    next.layers.push({ mediaType: MediaType.OciLayer, digest: rec.layer.diffId, size: rec.layer.size });
    addHistory(next, { created: rec.created, created_by: createdBy + LAYER_SUFFIX, comment: "tsbuild" });
    this.journal(state, next, rec);
    return { state: next, cached, layerSize: rec.layer.size };
  }
  /** The state named by `--from=` / `from=`: a stage of this Dockerfile, else an image. */
  async fromState(ref, inst) {
    const st = this.env.stageResult(ref);
    if (st) return st;
    try {
      const img = await this.s.image(ref);
      return { config: img.config, layers: img.layers, key: img.digest, args: /* @__PURE__ */ new Map(), cmdSet: false };
    } catch (e) {
      throw this.fail(inst, `--from=${ref}: no stage or image of that name`, e instanceof TsbuildError ? e.hint : void 0, e);
    }
  }
  /** Mounts a read-only view of a state's filesystem; `cleanup` gets its release. */
  /**
   * The parent filesystem for a step that only reads it: its layers merged without a mount where
   * the snapshotter can read them so, else a read-only view (a directory).
   */
  async parentTree(state, cleanup) {
    return await this.merged(state) ?? this.view(state, cleanup);
  }
  /** The parent's layers merged without a mount; undefined for no layers or where they cannot be read so. */
  async merged(state) {
    const top = await this.s.ensureSnapshots(state.layers, diffIds(state));
    return top === void 0 ? void 0 : this.s.snapshots.merged(top);
  }
  /**
   * Whether `path` (an image path, symlinks followed inside the image) is a directory of the
   * parent filesystem, read from its layers without a mount; undefined where they cannot be read so.
   */
  async isParentDir(state, path8) {
    if (state.layers.length === 0) return posix2.normalize(path8) === "/";
    const merged = await this.merged(state);
    if (merged === void 0) return void 0;
    const rel = secureJoin("/", path8, { followLast: true, symlinkTarget: (r) => merged.symlinkTarget(r) }).slice(1);
    return rel === "" || merged.lstat(rel)?.isDirectory() === true;
  }
  async view(state, cleanup) {
    const parent = await this.s.ensureSnapshots(state.layers, diffIds(state));
    const view = await this.s.snapshots.prepare(parent);
    cleanup.push(() => view.release());
    return view.rootfs;
  }
};
function configChanges(before, after) {
  const a = before.config.config ?? {};
  const b = after.config.config ?? {};
  const out = {};
  for (const k of /* @__PURE__ */ new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out[k] = b[k] ?? null;
  }
  if (before.config.author !== after.config.author) out.author = after.config.author ?? null;
  return out;
}
async function runCleanups(cleanup) {
  for (const fn of cleanup.reverse()) await fn().catch(() => {
  });
}
function summary(inst) {
  const first = inst.original.split("\n")[0] ?? "";
  return first.length > 120 ? first.slice(0, 119) + "\u2026" : first;
}

// packages/builder/src/steps/copy.ts
async function copyStep(kit, state, raw, ctx) {
  const { inst, used } = kit.expand(state, raw);
  const files = /* @__PURE__ */ new Map();
  if (ctx) ctx.inputs = { values: Object.fromEntries(used), files };
  const workdir = containerConfig2(state).WorkingDir || "/";
  const srcState = inst.kind === "copy" && inst.from !== void 0 ? await kit.fromState(inst.from, inst) : void 0;
  const urls = inst.kind === "add" ? inst.sources.filter(isUrl) : [];
  const localSources = inst.sources.filter((s) => !isUrl(s));
  const checksum = inst.kind === "add" ? inst.checksum : void 0;
  if (checksum !== void 0 && urls.length === 0) throw kit.fail(inst, "ADD --checksum can only be used with a URL source");
  if (inst.sources.length === 0 && inst.heredocs.length === 0) throw kit.fail(inst, `${inst.kind.toUpperCase()} requires at least one source`);
  const cleanup = [];
  let ahead;
  try {
    let sourceKey;
    let context2;
    let mayUnpack = false;
    if (srcState) sourceKey = ["stage", topChain(srcState) ?? "scratch", localSources];
    else if (localSources.length > 0) {
      const bctx = await kit.env.context();
      const matches = await resolve2(kit, bctx, localSources, inst);
      context2 = { ctx: bctx, matches, walks: await span("context.walk", async () => matches.map((m) => bctx.walk(m))) };
      mayUnpack = inst.kind === "add" && inst.unpack !== false && matches.some((m) => m.kind === "file");
      const statCache = await kit.s.statCache();
      const hopts = { statCache, walks: context2.walks, signal: kit.s.opts.signal, onEntry: (p, fp) => files.set(p, fp) };
      let captured;
      if (!mayUnpack && urls.length === 0 && worthHashingAhead(await span("context.scan", async () => estimateUnhashed(context2.walks, statCache)))) {
        if (await aheadIsSafe(kit, state, inst)) {
          const capture = new HashCapture();
          ahead = await writeAhead(kit, state, inst, { workdir, srcState: void 0, context: context2, urls, fetched: /* @__PURE__ */ new Map() }, capture.observe);
          if (ahead) {
            hopts.hashFile = capture.hashFile;
            captured = capture;
          }
        }
      }
      sourceKey = ["context", await span("context.hash", () => hashSources(bctx, matches, hopts))];
      captured?.remember(statCache);
    } else sourceKey = ["none"];
    const fetched = /* @__PURE__ */ new Map();
    const urlKeys = [];
    for (const u of urls) {
      if (checksum !== void 0) {
        urlKeys.push([u, checksum]);
        continue;
      }
      const dir = await kit.tempDir("add-url-");
      cleanup.push(() => rm12(dir, { recursive: true, force: true }));
      const got = await fetchUrl(u, dir, { signal: kit.s.opts.signal });
      fetched.set(u, got);
      urlKeys.push([u, posix3.basename(got), createHash16("sha256").update(await readFile15(got)).digest("hex")]);
    }
    const flags = copyFlags(inst);
    const shownFlags = flags.filter((f) => !f.startsWith("--unpack"));
    const createdBy = `${inst.kind.toUpperCase()} ${shownFlags.map((f) => `${f} `).join("")}${[...inst.sources, ...inst.heredocs.map((h) => `<<${h.name}`)].join(" ")} ${inst.dest}`;
    const key = cacheKey([state.key, inst.kind, sourceKey, inst.heredocs.map((h) => [h.name, h.content]), urlKeys, inst.dest, workdir, flags, used]);
    const plan = { workdir, srcState, context: context2, urls, fetched };
    const write = async (out) => mayUnpack && await unpacksArchives(inst, plan.context?.matches ?? []) ? writeWithArchives(kit, state, inst, plan, localSources, out) : writeCopyLayer(kit, state, inst, plan, out);
    return await kit.blobStep(state, key, createdBy, ahead ?? write);
  } finally {
    await ahead?.abort().catch(() => {
    });
    await runCleanups(cleanup);
  }
}
function copyFlags(inst) {
  const f = [];
  if (inst.kind === "copy" && inst.from !== void 0) f.push(`--from=${inst.from}`);
  if (inst.chown !== void 0) f.push(`--chown=${inst.chown}`);
  if (inst.chmod !== void 0) f.push(`--chmod=${inst.chmod}`);
  if (inst.parents) f.push("--parents");
  if (inst.link) f.push("--link");
  for (const e of inst.exclude) f.push(`--exclude=${e}`);
  if (inst.kind === "add" && inst.checksum !== void 0) f.push(`--checksum=${inst.checksum}`);
  if (inst.kind === "add" && inst.unpack !== void 0) f.push(`--unpack=${inst.unpack}`);
  return f;
}
async function unpacksArchives(inst, matches) {
  if (inst.kind !== "add" || inst.unpack === false) return false;
  for (const m of matches) if (m.kind === "file" && await isArchive(m.realPath)) return true;
  return false;
}
async function aheadIsSafe(kit, state, inst) {
  if (kit.s.opts.noCache) return true;
  if (kit.s.remote.size > 0) return false;
  const needsParent = !inst.link || inst.chown !== void 0 && !isNumericOwner(inst.chown);
  const top = topChain(state);
  return !needsParent || top === void 0 || await kit.s.snapshots.has(top);
}
async function writeAhead(kit, state, inst, plan, observe) {
  try {
    return await span("copy.ahead", () => kit.s.heavy.run(() => kit.writeLayer((out) => writeCopyLayer(kit, state, inst, plan, out, observe))));
  } catch {
    kit.s.checkAbort();
    return void 0;
  }
}
async function stageInline(kit, inst, plan, cleanup) {
  const staged = [];
  let stageDir;
  const stagingDir = async () => {
    if (!stageDir) {
      const d = stageDir = await kit.tempDir("copy-");
      cleanup.push(() => rm12(d, { recursive: true, force: true }));
    }
    return stageDir;
  };
  for (const h of inst.heredocs) {
    await writeFile8(join21(await stagingDir(), h.name), h.content, { mode: 420 });
    staged.push(h.name);
  }
  for (const u of plan.urls) {
    const dir = await stagingDir();
    const pre = plan.fetched.get(u);
    let got;
    if (pre !== void 0) {
      got = join21(dir, posix3.basename(pre));
      await copyFile(pre, got);
    } else {
      const fopts = { signal: kit.s.opts.signal };
      if (inst.kind === "add" && inst.checksum !== void 0) fopts.checksum = inst.checksum;
      got = await fetchUrl(u, dir, fopts);
    }
    staged.push(posix3.basename(got));
  }
  if (staged.length === 0 || !stageDir) return void 0;
  const ctx = await BuildContext.open(stageDir, { ignore: NO_IGNORE });
  const matches = await ctx.resolveSources(staged);
  const dest = inst.sources.length + inst.heredocs.length > 1 && !inst.dest.endsWith("/") ? `${inst.dest}/` : inst.dest;
  return { ctx, matches, dest };
}
function copyOptions(inst, plan, kit, chown4) {
  const o = { workdir: plan.workdir, parents: inst.parents, signal: kit.s.opts.signal };
  if (chown4) o.chown = chown4;
  if (inst.chmod !== void 0) o.chmod = parseChmod(inst.chmod);
  return o;
}
async function writeCopyLayer(kit, state, inst, plan, out, observe) {
  const cleanup = [];
  try {
    const parent = !inst.link && state.layers.length > 0 ? await span("snapshot.view", () => kit.parentTree(state, cleanup)) : void 0;
    let chown4;
    if (inst.chown !== void 0) {
      let names2 = typeof parent === "string" ? parent : void 0;
      if (names2 === void 0) {
        if (isNumericOwner(inst.chown)) {
          const empty = names2 = await kit.tempDir("chown-");
          cleanup.push(() => rm12(empty, { recursive: true, force: true }));
        } else names2 = await kit.view(state, cleanup);
      }
      chown4 = await resolveChown(inst.chown, names2);
    }
    const copyOpts = copyOptions(inst, plan, kit, chown4);
    const layer = new CopyLayerPlan(parent);
    const inline = await stageInline(kit, inst, plan, cleanup);
    if (inline) await layer.copy(inline.ctx, inline.matches, inline.dest, { ...copyOpts, parents: false });
    if (plan.srcState) {
      const bctx = await BuildContext.open(await kit.view(plan.srcState, cleanup), { ignore: NO_IGNORE });
      const matches = await resolve2(kit, bctx, inst.sources.filter((s) => !isUrl(s)), inst);
      await span("copy.plan", () => layer.copy(bctx, matches, inst.dest, { ...copyOpts, keepOwnership: true }));
    } else if (plan.context) {
      const { ctx, matches, walks } = plan.context;
      await span("copy.plan", () => layer.copy(ctx, matches, inst.dest, copyOpts, walks));
    }
    const wopts = { signal: kit.s.opts.signal, hash: false };
    if (kit.s.opts.sourceDateEpoch !== void 0) wopts.sourceDateEpoch = kit.s.opts.sourceDateEpoch;
    if (observe) wopts.observe = observe;
    return await span("layer.write", () => layer.write(out, wopts));
  } finally {
    await runCleanups(cleanup);
  }
}
async function writeWithArchives(kit, state, inst, plan, localSources, out) {
  const parent = inst.link ? void 0 : await span("snapshot.unpack", () => kit.s.ensureSnapshots(state.layers, diffIds(state)));
  const active = await span("snapshot.prepare", () => kit.s.snapshots.prepare(parent, { signal: kit.s.opts.signal }));
  try {
    await span("step.work", () => copyWork(kit, state, inst, active, plan, localSources));
    kit.s.checkAbort();
    const dopts = { signal: kit.s.opts.signal, lowerDirs: active.lowerDirs };
    if (kit.s.opts.sourceDateEpoch !== void 0) dopts.sourceDateEpoch = kit.s.opts.sourceDateEpoch;
    return await span("layer.diff", () => diff(active.upper, out, dopts));
  } finally {
    await active.release().catch(() => {
    });
  }
}
async function copyWork(kit, state, inst, active, plan, localSources) {
  const chownOwner = inst.chown !== void 0 ? await chownFor(kit, inst.chown, state, active, inst.link) : void 0;
  const copyOpts = copyOptions(inst, plan, kit, chownOwner);
  const cleanup = [];
  try {
    const inline = await stageInline(kit, inst, plan, cleanup);
    if (inline) await copyInto(inline.ctx, inline.matches, active.rootfs, inline.dest, { ...copyOpts, parents: false });
    if (localSources.length === 0) return;
    const bctx = await kit.env.context();
    const matches = await resolve2(kit, bctx, localSources, inst);
    const plain2 = [];
    for (const m of matches) {
      if (m.kind !== "file" || !await isArchive(m.realPath)) {
        plain2.push(m);
        continue;
      }
      const destDir = secureJoin(active.rootfs, posix3.resolve(plan.workdir, inst.dest), { followLast: true });
      await mkdir12(destDir, { recursive: true });
      await mkdir12(kit.s.stateDir, { recursive: true });
      const xopts = { tmpDir: kit.s.stateDir, signal: kit.s.opts.signal };
      if (chownOwner) xopts.chown = chownOwner;
      await extractArchive(m.realPath, destDir, xopts);
    }
    if (plain2.length > 0) await span("copy.files", () => copyInto(bctx, plain2, active.rootfs, inst.dest, copyOpts));
  } finally {
    await runCleanups(cleanup);
  }
}
function isNumericOwner(spec) {
  return /^\d+(:\d+)?$/.test(spec);
}
async function chownFor(kit, spec, state, active, link) {
  if (!link || isNumericOwner(spec)) return resolveChown(spec, active.rootfs);
  const cleanup = [];
  try {
    return await resolveChown(spec, await kit.view(state, cleanup));
  } finally {
    await runCleanups(cleanup);
  }
}
async function resolve2(kit, bctx, sources, inst) {
  try {
    return await bctx.resolveSources(sources, { excludes: inst.exclude, parents: inst.parents });
  } catch (e) {
    if (e instanceof SourceNotFoundError) throw kit.fail(inst, `${inst.kind.toUpperCase()} failed: ${e.message}`, e.hint, e);
    throw e;
  }
}
function isUrl(s) {
  return /^https?:\/\//i.test(s);
}

// packages/builder/src/steps/run.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { chmod as chmod2, chown as chown2, lstat as lstat6, mkdir as mkdir13, readdir as readdir11, readFile as readFile16, rm as rm14, rmdir as rmdir4, writeFile as writeFile9 } from "node:fs/promises";
import { join as join23, posix as posix4 } from "node:path";
import { Writable as Writable6 } from "node:stream";
import { createHash as createHash17 } from "node:crypto";

// packages/builder/src/ssh.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { chmod, chown, lstat as lstat5, mkdtemp as mkdtemp3, rm as rm13, stat as stat8 } from "node:fs/promises";
import { tmpdir as tmpdir2 } from "node:os";
import { join as join22 } from "node:path";
var childProcess7 = () => process.getBuiltinModule("node:child_process");
var net = () => process.getBuiltinModule("node:net");
async function agentSocket(id, paths, opts) {
  const kinds = await Promise.all(paths.map(async (p) => {
    try {
      const st = await stat8(p);
      return st.isSocket() ? "socket" : st.isFile() ? "file" : "other";
    } catch {
      throw new UsageError(`--ssh ${id}: ${p} does not exist`, { hint: "name an agent socket ($SSH_AUTH_SOCK) or private key files" });
    }
  }));
  if (kinds.includes("socket") && paths.length > 1) throw new UsageError(`--ssh ${id}: an agent socket cannot be combined with other paths`);
  const bad4 = paths.find((_, i) => kinds[i] === "other");
  if (bad4 !== void 0) throw new UsageError(`--ssh ${id}: ${bad4} is neither an agent socket nor a key file`);
  const dir = await mkdtemp3(join22(tmpdir2(), "tsbuild-ssh-"));
  let agent;
  let server;
  const conns = /* @__PURE__ */ new Set();
  const close = async () => {
    for (const c of conns) c.destroy();
    if (server) await new Promise((r) => server.close(() => r()));
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once("exit", () => r()));
      agent.kill("SIGTERM");
      await exited;
    }
    await rm13(dir, { recursive: true, force: true });
  };
  try {
    let upstream = paths[0];
    if (kinds[0] !== "socket") {
      upstream = join22(dir, "agent");
      agent = await startAgent(id, upstream);
      await addKeys(id, upstream, paths);
    }
    const path8 = join22(dir, "sock");
    server = net().createServer((c) => {
      conns.add(c);
      const u = net().connect(upstream);
      conns.add(u);
      const end = () => {
        c.destroy();
        u.destroy();
        conns.delete(c);
        conns.delete(u);
      };
      c.on("error", end).on("close", end);
      u.on("error", end).on("close", end);
      c.pipe(u).pipe(c);
    });
    await new Promise((resolve3, reject) => {
      server.once("error", reject);
      server.listen(path8, () => resolve3());
    });
    await chmod(path8, opts.mode);
    await chown(path8, opts.uid, opts.gid);
    return { path: path8, close };
  } catch (e) {
    await close().catch(() => {
    });
    throw e;
  }
}
function spawnError(id, e, program) {
  if (e.code === "ENOENT") {
    return new UsageError(`--ssh ${id}: key files need ${program}, which is not installed`, { hint: "install openssh-client, or pass an agent socket instead of key files" });
  }
  return new TsbuildError("SSH_AGENT", `--ssh ${id}: cannot run ${program}: ${e.message}`, { cause: e });
}
async function startAgent(id, sock) {
  const child = childProcess7().spawn("ssh-agent", ["-D", "-a", sock], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d) => stderr += d.toString("utf8"));
  const failed = new Promise((_, reject) => {
    child.once("error", (e) => reject(spawnError(id, e, "ssh-agent")));
    child.once("exit", (code) => reject(new TsbuildError("SSH_AGENT", `--ssh ${id}: ssh-agent exited (${code}): ${stderr.trim()}`)));
  });
  failed.catch(() => {
  });
  const ready = (async () => {
    for (let i = 0; i < 200; i++) {
      try {
        if ((await lstat5(sock)).isSocket()) return;
      } catch {
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new TsbuildError("SSH_AGENT", `--ssh ${id}: ssh-agent did not open its socket`);
  })();
  try {
    await Promise.race([ready, failed]);
  } catch (e) {
    child.kill("SIGTERM");
    throw e;
  }
  return child;
}
async function addKeys(id, sock, keys) {
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", SSH_AUTH_SOCK: sock, SSH_ASKPASS_REQUIRE: "never" };
  const child = childProcess7().spawn("ssh-add", ["-q", ...keys], { stdio: ["ignore", "ignore", "pipe"], env, detached: true });
  let stderr = "";
  child.stderr?.on("data", (d) => stderr += d.toString("utf8"));
  const code = await new Promise((resolve3, reject) => {
    child.once("error", (e) => reject(spawnError(id, e, "ssh-add")));
    child.once("close", (c) => resolve3(c));
  });
  if (code !== 0) {
    throw new UsageError(`--ssh ${id}: cannot load ${keys.join(", ")}: ${stderr.trim() || `ssh-add exited with ${code}`}`, {
      hint: "a key with a passphrase must be added to an agent first (ssh-add KEY), then passed as --ssh ID=$SSH_AUTH_SOCK"
    });
  }
}

// packages/builder/src/steps/run.ts
var limitsWarned = /* @__PURE__ */ new WeakSet();
async function warnUnappliedLimits(kit) {
  if (limitsWarned.has(kit.s)) return;
  limitsWarned.add(kit.s);
  const warning = await unappliedLimits(kit.s.opts.limits);
  if (warning !== void 0) kit.s.warn(warning);
}
function settingsKey(r) {
  const hosts = (r.extraHosts ?? []).map((h) => `${h.host}=${h.ip}`);
  const ulimits = (r.ulimits ?? []).map((u) => `${u.type}=${u.soft}:${u.hard}`).sort();
  if (hosts.length === 0 && ulimits.length === 0 && r.shmSize === void 0) return [];
  return [{ hosts, ulimits, shm: r.shmSize ?? null }];
}
async function runStep(kit, state, raw, ctx) {
  const { inst } = kit.expand(state, raw);
  const c = containerConfig2(state);
  const { env, argsForHistory } = runEnv(kit, state);
  const argv = runArgv(inst, shellOf(state));
  const network = inst.network && inst.network !== "default" ? inst.network : kit.s.opts.network;
  const keyEnv = env.filter((kv) => !PROXY_ARGS.has(kv.slice(0, kv.indexOf("="))) || state.args.has(kv.slice(0, kv.indexOf("="))));
  ctx.inputs = { values: Object.fromEntries(keyEnv.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])) };
  const settings = kit.s.opts.run ?? {};
  const key = cacheKey([
    state.key,
    "run",
    argv,
    keyEnv,
    c.User ?? "",
    c.WorkingDir ?? "",
    network,
    await mountKeys(kit, inst),
    inst.security ?? "",
    ...settingsKey(settings)
  ]);
  let usage;
  const result = await kit.layerStep(state, key, runCreatedBy(argv, argsForHistory), async (active) => {
    const cwd = c.WorkingDir || "/";
    await mkdir13(secureJoin(active.rootfs, cwd, { followLast: true }), { recursive: true });
    const user = await resolveUser(c.User || "root", active.rootfs);
    if (!env.some((kv) => kv.startsWith("HOME="))) env.push(`HOME=${user.home}`);
    const cleanup = [];
    try {
      const mounts = await runMounts2(kit, inst, cwd, cleanup, env);
      const created = await recordMountpoints(active.rootfs, mounts.map((m) => m.destination));
      const runOpts = {
        rootfs: active.rootfs,
        args: argv,
        env,
        cwd,
        user,
        network: network === "host" || network === "default" ? "host" : "none",
        mounts,
        limits: kit.s.opts.limits,
        stateDir: kit.s.stateDir,
        extraHosts: settings.extraHosts ?? [],
        stdout: logSink(kit, ctx, "stdout"),
        stderr: logSink(kit, ctx, "stderr"),
        signal: kit.s.opts.signal
      };
      if (kit.s.opts.runtime) runOpts.runtime = kit.s.opts.runtime;
      if (settings.ulimits && settings.ulimits.length > 0) runOpts.rlimits = settings.ulimits;
      if (settings.shmSize !== void 0) runOpts.shmSize = settings.shmSize;
      await warnUnappliedLimits(kit);
      const res = await span("runtime.run", () => run2(runOpts));
      usage = res.usage;
      await removeCreatedMountpoints(created);
      kit.s.checkAbort();
      if (res.exitCode !== 0) {
        const tail = ctx.tail.slice(-10);
        throw kit.fail(
          inst,
          `${summary(inst)}: exit code ${res.exitCode}${res.signal ? ` (${res.signal})` : ""}` + (tail.length > 0 ? `
${tail.map((l) => `  > ${l}`).join("\n")}` : ""),
          "no layer was written and the cache is unchanged"
        );
      }
    } finally {
      await runCleanups(cleanup);
    }
  });
  return usage ? { ...result, usage } : result;
}
function runEnv(kit, state) {
  const list = [...envList(state)];
  const envKeys = new Set(list.map((kv) => kv.split("=")[0]));
  if (!envKeys.has("PATH")) list.push(`PATH=${DEFAULT_PATH3}`);
  const hist = [];
  for (const [k, v] of state.args) {
    if (!envKeys.has(k)) list.push(`${k}=${v}`);
    if (!PROXY_ARGS.has(k)) hist.push([k, v]);
  }
  for (const k of PROXY_ARGS) {
    const v = kit.env.buildArgs[k];
    if (v !== void 0 && !state.args.has(k) && !envKeys.has(k)) {
      list.push(`${k}=${v}`);
      kit.env.consumed.add(k);
    }
  }
  return { env: list, argsForHistory: hist };
}
async function mountKeys(kit, inst) {
  const keys = [];
  for (const m of inst.mounts) {
    if (m.type === "bind" && m.from === void 0) keys.push([m.spec, await kit.env.contextKey()]);
    else if ((m.type === "bind" || m.type === "cache") && m.from !== void 0) {
      const src = await kit.fromState(m.from, inst);
      keys.push([m.spec, topChain(src) ?? "scratch"]);
    } else if (m.type === "secret") keys.push([m.type, m.id, m.target, m.env]);
    else keys.push([m.spec]);
  }
  return keys;
}
function runArgv(inst, shell) {
  if (inst.cmd.form === "exec") return [...inst.cmd.args];
  const cmd = inst.cmd.command.trim();
  const only = inst.heredocs.length === 1 ? inst.heredocs[0] : void 0;
  if (only && /^<<-?\s*["']?[^\s"']+["']?$/.test(cmd)) {
    const body = only.content;
    if (body.startsWith("#!")) {
      const interp = body.split("\n")[0].slice(2).trim().split(/\s+/);
      return [...interp, "-c", body.split("\n").slice(1).join("\n")];
    }
    return [...shell, body];
  }
  if (inst.heredocs.length > 0) {
    let script = cmd;
    for (const h of inst.heredocs) script += `
${h.content}${h.name}`;
    return [...shell, script];
  }
  return [...shell, inst.cmd.command];
}
function logSink(kit, ctx, stream) {
  const emit = kit.s.opts.emit;
  let partial = "";
  return new Writable6({
    write(chunk, _enc, cb) {
      const data = chunk.toString("utf8");
      emit({ type: "step-log", time: Date.now(), id: ctx.id, stream, data });
      const lines = (partial + data).split("\n");
      partial = lines.pop() ?? "";
      ctx.tail.push(...lines);
      if (ctx.tail.length > 50) ctx.tail.splice(0, ctx.tail.length - 50);
      cb();
    },
    final(cb) {
      if (partial) ctx.tail.push(partial);
      cb();
    }
  });
}
async function runMounts2(kit, inst, cwd, cleanup, env) {
  const out = [];
  let sshCount = 0;
  for (const m of inst.mounts) {
    const target2 = m.target ?? (m.type === "secret" ? `/run/secrets/${m.id ?? ""}` : m.type === "ssh" ? `/run/buildkit/ssh_agent.${sshCount}` : void 0);
    if (target2 === void 0 && m.type !== "secret") throw kit.fail(inst, `--mount=${m.spec}: target is required`);
    const abs = target2 === void 0 ? void 0 : posix4.resolve(cwd, target2);
    switch (m.type) {
      case "tmpfs": {
        const t = { type: "tmpfs", destination: abs };
        if (m.size !== void 0) t.size = m.size;
        out.push(t);
        break;
      }
      case "cache": {
        const id = m.id ?? abs;
        const name = createHash17("sha256").update(`${m.from ?? ""}\0${id}`).digest("hex").slice(0, 32);
        let dir = await kit.s.cacheMountDir(name, id);
        if (m.sharing === "locked" || m.sharing === "private") {
          const held = await holdLock(kit, `${dir}.lock`, m.sharing === "locked" ? 36e5 : 0);
          if (held) cleanup.push(held);
          else {
            dir = await kit.tempDir("cache-private-");
            const d = dir;
            cleanup.push(() => rm14(d, { recursive: true, force: true }));
          }
        }
        if ((await readdir11(dir)).length === 0) {
          await chmod2(dir, m.mode ?? 493);
          await chown2(dir, m.uid ?? 0, m.gid ?? 0);
        }
        out.push({ type: "bind", source: dir, destination: abs, readonly: m.readonly });
        break;
      }
      case "bind": {
        const rootDir = m.from === void 0 ? (await kit.env.context()).root : await kit.view(await kit.fromState(m.from, inst), cleanup);
        const src = secureJoin(rootDir, m.source ?? "/", { followLast: true });
        if (!await exists(src)) throw kit.fail(inst, `--mount=${m.spec}: source "${m.source ?? "/"}" not found`);
        out.push({ type: "bind", source: src, destination: abs, readonly: m.from === void 0 ? true : m.readonly });
        break;
      }
      case "ssh": {
        const id = m.id ?? "default";
        if (m.source !== void 0) throw kit.fail(inst, `--mount=${m.spec}: ssh does not support source`);
        if (sshCount++ === 0 && !env.some((kv) => kv.startsWith("SSH_AUTH_SOCK="))) env.push(`SSH_AUTH_SOCK=${abs}`);
        const paths = kit.s.opts.run?.ssh?.[id];
        if (paths === void 0) {
          if (m.required) throw kit.fail(inst, `ssh agent "${id}" is required but was not provided`, `pass it with --ssh ${id === "default" ? "default" : `${id}=SOCKET_OR_KEYFILE`}`);
          break;
        }
        const sock = await agentSocket(id, paths, { uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 384 });
        cleanup.push(() => sock.close());
        out.push({ type: "bind", source: sock.path, destination: abs, readonly: true });
        break;
      }
      case "secret": {
        const id = m.id ?? "";
        const spec = kit.env.secrets[id];
        let value;
        if (spec?.file !== void 0) value = await readFile16(spec.file);
        else if (spec?.env !== void 0 && process.env[spec.env] !== void 0) value = Buffer.from(process.env[spec.env]);
        if (value === void 0) {
          if (m.required) throw kit.fail(inst, `secret "${id}" is required but was not provided`, `pass it with --secret id=${id},src=FILE`);
          break;
        }
        if (m.env !== void 0) env.push(`${m.env}=${value.toString("utf8")}`);
        if (abs !== void 0 || m.env === void 0) {
          const dir = await kit.tempDir("secret-");
          cleanup.push(() => rm14(dir, { recursive: true, force: true }));
          const f = join23(dir, "value");
          await writeFile9(f, value, { mode: 384 });
          await chown2(f, m.uid ?? 0, m.gid ?? 0);
          await chmod2(f, m.mode ?? 256);
          out.push({ type: "bind", source: f, destination: abs ?? `/run/secrets/${id}`, readonly: true });
        }
        break;
      }
    }
  }
  return out;
}
async function holdLock(kit, file, timeoutMs) {
  let release;
  const held = new Promise((r) => release = r);
  let done;
  const acquired = await new Promise((resolve3) => {
    done = withLock(file, async () => {
      resolve3(true);
      await held;
    }, { timeoutMs, signal: kit.s.opts.signal }).catch(() => resolve3(false));
  });
  if (!acquired) return void 0;
  return async () => {
    release();
    await done;
  };
}
async function recordMountpoints(rootfs, targets) {
  const created = [];
  for (const t of targets) {
    const parts = posix4.resolve("/", t).split("/").filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = secureJoin(rootfs, "/" + parts.slice(0, i).join("/"), { followLast: true });
      if (!await exists(p) && !created.includes(p)) created.push(p);
    }
  }
  return created;
}
async function removeCreatedMountpoints(created) {
  for (const p of [...created].sort((a, b) => b.length - a.length)) {
    try {
      const st = await lstat6(p);
      if (st.isDirectory()) await rmdir4(p);
      else if (st.size === 0) await rm14(p);
    } catch {
    }
  }
}

// packages/builder/src/steps/workdir.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { chown as chown3, mkdir as mkdir14 } from "node:fs/promises";
import { posix as posix5 } from "node:path";
async function workdirStep(kit, state, raw, ctx) {
  const { inst, used } = kit.expand(state, raw);
  if (ctx) ctx.inputs = { values: Object.fromEntries(used) };
  const c = containerConfig2(state);
  const dir = posix5.resolve(c.WorkingDir || "/", inst.path);
  const user = c.User || "";
  const key = cacheKey([state.key, "workdir", dir, user, used]);
  const r = await kit.layerStep(
    state,
    key,
    `WORKDIR ${dir}`,
    async (active) => {
      const target2 = secureJoin(active.rootfs, dir, { followLast: true });
      const existed = await exists(target2);
      await mkdir14(target2, { recursive: true, mode: 493 });
      if (!existed && user && user !== "root" && user !== "0") {
        const u = await resolveUser(user, active.rootfs);
        await chown3(target2, u.uid, u.gid);
      }
    },
    // An existing directory is found in the parent's layers, without mounting them.
    { emptyIfUnchanged: true, unchanged: async () => await kit.isParentDir(state, dir) === true }
  );
  containerConfig2(r.state).WorkingDir = dir;
  return r;
}

// packages/builder/src/stage.ts
var StageScheduler = class {
  constructor(env) {
    this.env = env;
    this.s = env.session;
  }
  env;
  results = /* @__PURE__ */ new Map();
  s;
  run(stage) {
    let p = this.results.get(stage);
    if (!p) {
      p = this.runStage(stage);
      this.results.set(stage, p);
    }
    return p;
  }
  /** Waits for every stage started so far, whatever its outcome (before the store is left alone). */
  async settle() {
    await Promise.allSettled([...this.results.values()]);
  }
  async runStage(stage) {
    const { src, from } = this.env;
    const deps = this.env.deps.get(stage);
    const label2 = stage.name ?? `stage-${stage.index}`;
    const kit = new StepKit({
      ...this.env,
      file: src.file,
      text: src.text,
      escapeToken: src.df.escapeToken,
      stageLabel: label2,
      stageResult: (ref) => {
        const st = findStage(src.df, ref);
        return st ? this.run(st) : void 0;
      }
    });
    for (const r of deps?.reads ?? []) void this.run(r).catch(() => {
    });
    const total = stage.instructions.length + 1;
    const id = this.s.nextStepId();
    const t0 = Date.now();
    const emit = this.s.opts.emit;
    emit({ type: "step-start", time: t0, id, name: `[${label2} 1/${total}] FROM ${from.image(stage)}`, stage: label2, index: 1, total });
    let base;
    try {
      base = await from.baseState(this.s, stage, deps?.base ? await this.run(deps.base) : void 0, this.env.platform, kit);
    } catch (e) {
      emit({ type: "step-error", time: Date.now(), id, message: e instanceof Error ? e.message : String(e) });
      throw e;
    }
    emit({ type: "step-done", time: Date.now(), id, cached: true, durationMs: Date.now() - t0 });
    const steps = [...base.triggers, ...stage.instructions];
    return runSteps(kit, base.state, steps, Math.max(total, steps.length + 1));
  }
};
async function runSteps(kit, state, steps, total) {
  const s = kit.s;
  let cur = state;
  for (const [i, inst] of steps.entries()) {
    s.checkAbort();
    const id = s.nextStepId();
    const start = Date.now();
    s.opts.emit({ type: "step-start", time: start, id, name: `[${kit.env.stageLabel} ${i + 2}/${total}] ${summary(inst)}`, stage: kit.env.stageLabel, index: i + 2, total });
    try {
      const ctx = { id, inst, tail: [] };
      const r = await step(kit, cur, ctx);
      const miss = await s.explain?.step(`${kit.env.stageLabel}/${i + 2}`, {
        key: r.state.key,
        parent: cur.key,
        instruction: inst.original,
        inputs: ctx.inputs,
        cached: r.cached,
        noCache: s.opts.noCache
      });
      const layer = r.state.layers.length > cur.layers.length ? r.state.layers.at(-1) : void 0;
      s.steps.push({ stage: kit.env.stageLabel, instruction: inst.original, cacheHit: r.cached, cacheKey: r.state.key, ...layer ? { layer: { digest: layer.digest, mediaType: layer.mediaType, size: layer.size } } : {} });
      cur = r.state;
      s.opts.emit({ type: "step-done", time: Date.now(), id, cached: r.cached, durationMs: Date.now() - start, ...layerSize(r), ...miss ? { miss } : {} });
    } catch (e) {
      const err = kit.wrap(inst, e);
      s.opts.emit({ type: "step-error", time: Date.now(), id, message: err instanceof Error ? err.message : String(err) });
      throw err;
    }
  }
  return cur;
}
function layerSize(r) {
  const out = {};
  if (r.layerSize !== void 0) out.layerSize = r.layerSize;
  if (r.usage) {
    out.usage = { cpu_seconds: Math.round(r.usage.cpuSeconds * 1e3) / 1e3 };
    if (r.usage.memoryPeakBytes !== void 0) out.usage.memory_peak_bytes = r.usage.memoryPeakBytes;
  }
  return out;
}
function step(kit, state, ctx) {
  const inst = ctx.inst;
  switch (inst.kind) {
    case "run":
      return runStep(kit, state, inst, ctx);
    case "copy":
    case "add":
      return copyStep(kit, state, inst, ctx);
    case "workdir":
      return workdirStep(kit, state, inst, ctx);
    case "from":
      throw kit.fail(inst, "FROM cannot be used here");
    default:
      return configStep(kit, state, inst, ctx);
  }
}

// packages/builder/src/explain.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createHash as createHash18 } from "node:crypto";
var NS3 = "build-inputs";
var FILES_MEDIA_TYPE = "application/vnd.tsbuild.step-files.v1+json";
var SHOWN = 5;
function buildIdentity(tags, target2, contextDir, file) {
  const ids = tags.length > 0 ? tags.map((t) => `tag:${t}`) : [`context:${contextDir}\0${file}`];
  return ids.map((id) => createHash18("sha256").update(`${id}\0target:${target2 ?? ""}`).digest("hex"));
}
var MissExplainer = class {
  constructor(store, ids) {
    this.store = store;
    this.ids = ids;
  }
  store;
  ids;
  previous;
  current = { v: 1, steps: {} };
  blobs = [];
  loaded;
  load() {
    return this.loaded ??= (async () => {
      const v = await this.store.meta(NS3, { durable: false }).get(this.ids[0]);
      this.previous = v && v.v === 1 && typeof v.steps === "object" ? v : void 0;
    })();
  }
  /**
   * Records a step of this build and, when it ran (a miss), says why by comparing it with the
   * same step (by stage and position) of the last build of the same tag and target.
   */
  async step(position, r) {
    await this.load();
    const prev = this.previous?.steps[position];
    const stored = { key: r.key, parent: r.parent, instruction: r.instruction };
    if (r.inputs?.values && Object.keys(r.inputs.values).length > 0) stored.values = r.inputs.values;
    if (r.inputs?.files && r.inputs.files.size > 0) {
      if (prev?.files && prev.key === r.key) stored.files = prev.files;
      else stored.files = await this.storeFiles(r.inputs.files);
      this.blobs.push(stored.files);
    }
    this.current.steps[position] = stored;
    if (r.cached) return void 0;
    if (r.noCache) return { reason: "--no-cache" };
    if (!prev) return void 0;
    if (prev.key === r.key) return { reason: "its cached result was gone (pruned, or its layer missing)" };
    if (prev.parent !== r.parent) {
      return { reason: position.endsWith("/2") ? "the base image changed" : "the step before it changed" };
    }
    if (prev.instruction !== r.instruction) return { reason: "the instruction changed" };
    const changedValues = [.../* @__PURE__ */ new Set([...Object.keys(prev.values ?? {}), ...Object.keys(stored.values ?? {})])].filter((k) => prev.values?.[k] !== stored.values?.[k]).sort();
    if (changedValues.length > 0) return { reason: `${changedValues.length === 1 ? "value" : "values"} changed: ${shown2(changedValues)}`, values: changedValues };
    if (stored.files && prev.files) {
      const files = await this.diffFiles(prev.files, r.inputs?.files ?? /* @__PURE__ */ new Map());
      if (files) {
        const parts = [];
        if (files.changed.length > 0) parts.push(`changed ${shown2(files.changed)}`);
        if (files.added.length > 0) parts.push(`added ${shown2(files.added)}`);
        if (files.removed.length > 0) parts.push(`removed ${shown2(files.removed)}`);
        return { reason: `files ${parts.join("; ")}`, files };
      }
    }
    return { reason: "its inputs changed" };
  }
  /** Keeps this build's inputs for the next build of the same tags and target. */
  async save() {
    const meta = this.store.meta(NS3, { durable: false });
    for (const id of this.ids) await meta.set(id, this.current, { roots: [...new Set(this.blobs)] });
  }
  async storeFiles(files) {
    const list = [...files].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    return (await this.store.putJson(FILES_MEDIA_TYPE, list)).digest;
  }
  async diffFiles(prevBlob, now) {
    let prev;
    try {
      prev = JSON.parse((await this.store.readBlob(prevBlob, { maxSize: 256 * 1024 * 1024 })).toString("utf8"));
      if (!Array.isArray(prev)) return void 0;
    } catch {
      return void 0;
    }
    const before = new Map(prev);
    const changed2 = [];
    const added = [];
    for (const [p, fp] of now) {
      const was = before.get(p);
      if (was === void 0) added.push(p);
      else if (was !== fp) changed2.push(p);
    }
    const removed = prev.map(([p]) => p).filter((p) => !now.has(p));
    if (changed2.length + added.length + removed.length === 0) return void 0;
    return { changed: changed2.sort(), added: added.sort(), removed: removed.sort() };
  }
};
function shown2(names2) {
  const head = names2.slice(0, SHOWN).join(", ");
  return names2.length > SHOWN ? `${head} (+${names2.length - SHOWN} more)` : head;
}

// packages/builder/src/steps/from.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { readFile as readFile18, stat as stat9 } from "node:fs/promises";
import { join as join25 } from "node:path";

// packages/builder/src/layout.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { createReadStream as createReadStream3 } from "node:fs";
import { open as open5, readFile as readFile17 } from "node:fs/promises";
import { join as join24 } from "node:path";
function fail(message, hint) {
  return new UsageError(message, hint === void 0 ? {} : { hint });
}
async function readJsonBlob(dir, d, size) {
  const file = join24(dir, "blobs", "sha256", digestHex(d));
  let fh;
  try {
    fh = await open5(file, "r");
  } catch {
    throw fail(`blob ${d} is not in the layout`);
  }
  let bytes;
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_MANIFEST_SIZE) throw fail(`blob ${d} is not a manifest or config (${st.size} bytes)`);
    bytes = await fh.readFile();
  } finally {
    await fh.close();
  }
  if (sha256(bytes) !== d || size !== void 0 && bytes.length !== size) throw new TsbuildError("DIGEST_MISMATCH", `blob ${d} of the layout does not match its digest`);
  return bytes;
}
async function pick2(ref) {
  let text;
  try {
    text = await readFile17(join24(ref.dir, "index.json"));
  } catch {
    throw fail(`${ref.dir} is not an OCI image layout (no index.json)`, "write one with skopeo copy \u2026 oci:DIR:TAG, or build with -o type=oci and unpack it");
  }
  if (text.length > MAX_MANIFEST_SIZE) throw fail(`index.json is ${text.length} bytes, more than the ${MAX_MANIFEST_SIZE} allowed`);
  const idx = parseIndex(text, { source: join24(ref.dir, "index.json") });
  if (ref.digest !== void 0) {
    const hit2 = idx.manifests.find((m) => m.digest === ref.digest);
    if (hit2) return hit2;
    const bytes = await readJsonBlob(ref.dir, ref.digest, void 0);
    const mediaType = sniffMediaType(bytes);
    if (mediaType === void 0 || !isManifestMediaType(mediaType) && !isIndexMediaType(mediaType)) throw fail(`${ref.digest} is not a manifest or an index`);
    return { mediaType, digest: ref.digest, size: bytes.length };
  }
  const tags = idx.manifests.map((m) => m.annotations?.[ANNOTATION_REF_NAME]).filter((t) => t !== void 0);
  const tag = ref.tag ?? "latest";
  const hit = idx.manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
  if (hit) return hit;
  if (ref.tag === void 0 && idx.manifests.length === 1) return idx.manifests[0];
  throw fail(`no image tagged ${JSON.stringify(tag)}`, tags.length > 0 ? `tags in the layout: ${tags.join(", ")}` : "name the image by digest: oci-layout://DIR@sha256:\u2026");
}
async function importFromLayout(store, ref, platform, signal) {
  let desc = await pick2(ref);
  for (let depth = 0; isIndexMediaType(desc.mediaType); depth++) {
    if (depth > 4) throw fail("indexes nest too deeply");
    const idx = parseIndex(await readJsonBlob(ref.dir, desc.digest, desc.size), { source: desc.digest });
    const match = idx.manifests.find((m) => platformMatches(m.platform, platform));
    if (!match) {
      const have = idx.manifests.map((m) => m.platform ? formatPlatform(m.platform) : "?").join(", ");
      throw fail(`the index has no image for ${formatPlatform(platform)} (it has: ${have || "none"})`);
    }
    desc = match;
  }
  if (!isManifestMediaType(desc.mediaType)) throw fail(`${desc.digest} has media type ${desc.mediaType}, not an image manifest`);
  const manifestBytes = await readJsonBlob(ref.dir, desc.digest, desc.size);
  const manifest = parseManifest(manifestBytes, { source: desc.digest });
  const configBytes = await readJsonBlob(ref.dir, manifest.config.digest, manifest.config.size);
  const config = parseConfig(configBytes, { source: manifest.config.digest });
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw fail(`the image config lists ${config.rootfs.diff_ids.length} layers and the manifest ${manifest.layers.length}`);
  }
  for (const l of manifest.layers) {
    if (await store.hasBlob(l.digest)) continue;
    const file = join24(ref.dir, "blobs", "sha256", digestHex(l.digest));
    const opts = {};
    if (signal) opts.signal = signal;
    try {
      await store.writeBlob(createReadStream3(file), { digest: l.digest, size: l.size }, opts);
    } catch (e) {
      if (e.code === "ENOENT") throw fail(`layer ${l.digest} is not in the layout`);
      throw e;
    }
  }
  await store.writeBlob(configBytes, { digest: manifest.config.digest, size: configBytes.length });
  await store.writeBlob(manifestBytes, { digest: desc.digest, size: manifestBytes.length });
  return { digest: desc.digest, config, layers: manifest.layers.map((l) => ({ ...l })) };
}

// packages/builder/src/steps/from.ts
function globalArgs2(df, buildArgs, predefined, consumed) {
  const args = new Map(Object.entries(predefined));
  for (const a of df.globalArgs) {
    for (const kv of a.args) {
      let v;
      if (Object.hasOwn(buildArgs, kv.key)) {
        v = buildArgs[kv.key];
        consumed.add(kv.key);
      } else if (kv.value !== void 0) {
        v = envExpander(args, { escapeToken: df.escapeToken }).word(kv.value);
      }
      if (v !== void 0) args.set(kv.key, v);
    }
  }
  return args;
}
var FromResolver = class {
  constructor(src, args) {
    this.src = src;
    this.args = args;
  }
  src;
  args;
  names = /* @__PURE__ */ new Map();
  fail(s, message, extra = {}) {
    return new DockerfileError(message, { file: this.src.file, range: s.from.range, excerpt: excerptOf(this.src.text, s.from.range), ...extra });
  }
  /** The base name of `s`, e.g. `busybox:latest` or the name of an earlier stage. */
  image(s) {
    let w = this.names.get(s);
    if (w !== void 0) return w;
    if (contextOf(this.src.df, s)) return s.from.image;
    try {
      w = envExpander(this.args, { escapeToken: this.src.df.escapeToken }).word(s.from.image);
    } catch (e) {
      throw this.fail(s, `FROM: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (w === "") throw this.fail(s, `FROM: base name (${s.from.image}) should not be blank`);
    this.names.set(s, w);
    return w;
  }
  /** Refuses a `FROM --platform` that tsbuild cannot build (checked before anything runs). */
  checkPlatform(s) {
    if (s.from.platform === void 0) return;
    targetPlatform(envExpander(this.args).word(s.from.platform), `${this.src.file}:${s.from.range.start.line}: FROM --platform`);
  }
  /**
   * The state stage `s` starts from and the ONBUILD triggers it inherits. `base` is the state of
   * the stage it builds on, when it builds on a stage.
   */
  async baseState(session, s, base, platform, kit) {
    const named = contextOf(this.src.df, s);
    if (named) return { state: await contextState(session, named, platform, kit), triggers: [] };
    const name = this.image(s);
    let state;
    try {
      if (base) {
        state = { ...base, config: structuredClone(base.config), layers: [...base.layers], args: /* @__PURE__ */ new Map(), cmdSet: false };
      } else if (name.toLowerCase() === "scratch") {
        state = scratchState(platform);
      } else {
        const img = await session.image(name);
        checkImagePlatform(img.config, name);
        state = { config: img.config, layers: img.layers, key: cacheKey(["from", img.digest]), args: /* @__PURE__ */ new Map(), cmdSet: false };
      }
    } catch (e) {
      if (e instanceof TsbuildError && !(e instanceof DockerfileError)) {
        throw this.fail(s, `FROM ${name}: ${e.message}`, { hint: e.hint, cause: e });
      }
      throw e;
    }
    if (!envList(state).some((kv) => kv.startsWith("PATH="))) setEnv(state, "PATH", DEFAULT_PATH3);
    const triggers = state.config.config?.OnBuild ?? [];
    if (state.config.config) {
      if (triggers.length === 0) delete state.config.config.OnBuild;
      else state.config.config.OnBuild = null;
    }
    return { state, triggers: this.parseTriggers(triggers, s) };
  }
  /** ONBUILD triggers of a base image, parsed as the instructions they were written as. */
  parseTriggers(triggers, s) {
    const out = [];
    for (const t of triggers) {
      try {
        const r = parse(t);
        for (const node2 of r.ast.children) out.push(parseInstruction(node2, { file: `ONBUILD trigger of ${s.from.image}` }));
      } catch (e) {
        throw this.fail(s, `invalid ONBUILD trigger in base image: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return out;
  }
};
function imageState(img) {
  return { config: img.config, layers: img.layers, key: cacheKey(["from", img.digest]), args: /* @__PURE__ */ new Map(), cmdSet: false };
}
async function contextState(session, c, platform, kit) {
  try {
    switch (c.source.type) {
      case "image": {
        const img = await session.image(c.source.ref);
        checkImagePlatform(img.config, c.source.ref);
        return imageState(img);
      }
      case "oci-layout": {
        const img = await importFromLayout(session.store, c.source, platform, session.opts.signal);
        checkImagePlatform(img.config, c.spec);
        return imageState(img);
      }
      case "local":
        if (!kit) throw new TsbuildError("INTERNAL", "a directory context needs the step kit");
        return await directoryState(kit, c.source.dir, c.name, platform);
    }
  } catch (e) {
    if (e instanceof TsbuildError && !e.message.startsWith("--build-context")) {
      const wrapped = new TsbuildError(e.code, `--build-context ${c.spec}: ${e.message}`, { hint: e.hint, cause: e });
      wrapped.exitCode = e.exitCode;
      throw wrapped;
    }
    throw e;
  }
}
async function contextIgnore(dir) {
  const file = join25(dir, ".dockerignore");
  try {
    return createIgnoreMatcher(parseIgnoreFile(await readFile18(file, "utf8")), file);
  } catch (e) {
    if (e.code === "ENOENT") return NO_IGNORE;
    throw e;
  }
}
async function directoryState(kit, dir, name, platform) {
  const st = await stat9(dir).catch(() => void 0);
  if (!st) throw new UsageError(`directory ${dir} does not exist`);
  if (!st.isDirectory()) throw new UsageError(`${dir} is not a directory`, { hint: "a context is a directory, docker-image://REF or oci-layout://DIR" });
  const ctx = await BuildContext.open(dir, { ignore: await contextIgnore(dir) });
  const matches = await ctx.resolveSources(["."]);
  const content = await hashSources(ctx, matches, { statCache: await kit.s.statCache(), signal: kit.s.opts.signal });
  const key = cacheKey(["build-context", content]);
  const r = await kit.layerStep(scratchState(platform), key, `COPY --from=${name} / /`, async (active) => {
    await copyInto(ctx, matches, active.rootfs, "/", { workdir: "/", signal: kit.s.opts.signal });
  });
  return r.state;
}
function scratchState(platform) {
  return {
    config: { architecture: platform.architecture, os: platform.os, config: {}, rootfs: { type: "layers", diff_ids: [] }, history: [] },
    layers: [],
    key: cacheKey(["from", "scratch", platform]),
    args: /* @__PURE__ */ new Map(),
    cmdSet: false
  };
}
function checkImagePlatform(config, ref) {
  const host = hostPlatform();
  if (config.os !== host.os || config.architecture !== host.architecture && config.architecture !== "") {
    throw new TsbuildError("PLATFORM", `image ${ref} is ${config.os}/${config.architecture}, not ${formatPlatform(host)}`);
  }
}

// packages/builder/src/build.ts
async function openRoot(root, opts = {}) {
  const r = resolveRoot(root ? { root } : {});
  const store = await openStore({ root: r });
  store.setFetcher(new RemoteFetcher(store, opts));
  if (await deadBundles(join26(r, "state"))) {
    const runtimeRoot = defaultRuntimeRoot(join26(r, "state"));
    await cleanupContainers("runc", runtimeRoot === void 0 ? {} : { runtimeRoot }).catch(() => {
    });
  }
  const snapshots = await openSnapshotter({ root: join26(r, "snapshots") });
  return { root: r, store, snapshots };
}
async function deadBundles(stateDir) {
  try {
    return (await readdir12(stateDir)).some((n) => {
      const pid = ownerPid(n);
      return pid !== void 0 && !pidAlive(pid);
    });
  } catch {
    return false;
  }
}
async function build(opts) {
  requireRoot("tsbuild build");
  const started = Date.now();
  planPublish(opts);
  const checked = await span("dockerfile.check", () => checkBuild(opts));
  const { contextDir, file, shownFile, text } = checked;
  const df = withContexts(buildableDockerfile(checked), opts.buildContexts ?? []);
  const src = { df, file: shownFile, text };
  const platform = targetPlatform(opts.platform);
  const annotations = imageAnnotations(opts.annotations ?? [], platform);
  const emit = opts.onEvent ?? (() => {
  });
  const buildArgs = { ...opts.buildArgs ?? {} };
  const predefined = platformArgs(platform);
  const consumed = /* @__PURE__ */ new Set();
  const args = globalArgs2(df, buildArgs, predefined, consumed);
  const from = new FromResolver(src, args);
  const plan = planStages(df, opts.target, (s) => from.image(s), shownFile, text);
  for (const s of plan.order) from.checkPlatform(s);
  await checkRlimits(opts.ulimits ?? []);
  const caches = [...opts.cacheFrom ?? [], ...opts.cacheTo ?? []];
  const gha = caches.some((c) => c.type === "gha") ? GhaCacheClient.tryFromEnv(process.env) : void 0;
  const { root, store, snapshots } = await span("root.open", () => openRoot(opts.root, { registry: opts.registry, gha }));
  const session = new BuildSession(root, store, snapshots, {
    noCache: opts.noCache ?? false,
    pull: opts.pull ?? false,
    registry: opts.registry ?? {},
    emit,
    signal: opts.signal,
    sourceDateEpoch: opts.sourceDateEpoch,
    runtime: opts.runtime,
    network: opts.network ?? "default",
    limits: opts.limits ?? {},
    run: { extraHosts: opts.extraHosts, ulimits: opts.ulimits, shmSize: opts.shmSize, ssh: opts.ssh }
  });
  const remoteOpts = { store, registry: opts.registry, gha, signal: opts.signal, warn: (m) => session.warn(m) };
  session.explain = new MissExplainer(store, buildIdentity(planPublish(opts).names, opts.target, contextDir, file));
  try {
    if (opts.cacheFrom && opts.cacheFrom.length > 0 && !opts.noCache) {
      for (const s of plan.order) {
        const name = from.image(s);
        if (!plan.deps.get(s)?.base && name.toLowerCase() !== "scratch" && !df.stages.some((st) => st.name === name.toLowerCase())) void session.image(name).catch(() => {
        });
      }
      session.remote = await span("cache.import", () => RemoteCaches.load(opts.cacheFrom ?? [], remoteOpts));
    }
    let ctxPromise;
    const context2 = () => ctxPromise ??= BuildContext.open(contextDir, { ignore: checked.ignore });
    let ctxKey;
    const contextKey = () => ctxKey ??= context2().then(async (c) => hashSources(c, await c.resolveSources(["."]), { statCache: await session.statCache() }));
    emit({ type: "build-start", time: Date.now(), stages: plan.order.length, steps: plan.order.reduce((n, s) => n + s.instructions.length + 1, 0) });
    const inlineCache = opts.cacheTo?.find((c) => c.type === "inline");
    if (inlineCache && !planPublish(opts).push) session.warn("--cache-to type=inline travels with a pushed image, and nothing is pushed: no cache was written");
    for (let attempt = 0; ; attempt++) {
      const stages = new StageScheduler({
        session,
        src,
        from,
        deps: plan.deps,
        platform,
        context: context2,
        contextKey,
        buildArgs,
        consumed,
        globalArgs: args,
        secrets: opts.secrets ?? {}
      });
      try {
        let state;
        try {
          state = await span("stages", () => stages.run(plan.order.at(-1)));
        } finally {
          await stages.settle();
          await span("statcache.save", () => session.saveStatCache().catch(() => {
          }));
        }
        const image = await span("image.write", () => writeImage(store, state, platform, opts.labels, annotations));
        emit({ type: "build-done", time: Date.now(), imageDigest: image.manifest.digest, configDigest: image.configDigest, durationMs: Date.now() - started });
        const input = exportInput(session, state.key);
        const finished5 = /* @__PURE__ */ new Date();
        const attestations = new Attestations(opts, {
          dockerfile: { path: opts.file ?? "Dockerfile", text },
          target: opts.target,
          buildArgs,
          labels: opts.labels,
          platform,
          context: { path: opts.context, digest: contextKey },
          baseImages: await session.baseImages(),
          secrets: Object.keys(opts.secrets ?? {}).sort(),
          ssh: Object.keys(opts.ssh ?? {}).sort(),
          steps: session.steps,
          startedOn: opts.sourceDateEpoch !== void 0 ? new Date(opts.sourceDateEpoch * 1e3) : new Date(started),
          finishedOn: opts.sourceDateEpoch !== void 0 ? new Date(opts.sourceDateEpoch * 1e3) : finished5,
          created: new Date(session.now()),
          rootfs: async () => {
            const cleanup = [];
            const parent = await session.ensureSnapshots(state.layers, state.config.rootfs.diff_ids);
            const view = await snapshots.prepare(parent, { signal: opts.signal });
            cleanup.push(() => view.release());
            return { dir: view.rootfs, release: async () => {
              for (const c of cleanup) await c();
            } };
          },
          warn: (m) => session.warn(m)
        });
        const published = await span("publish", () => publish(store, image, {
          ...opts,
          emit,
          signal: opts.signal,
          attestations,
          pushAnnotations: inlineCache ? async () => inlineAnnotation(await cacheDocument(input, { ...inlineCache, compression: opts.compression ?? "gzip" }, remoteOpts)) : void 0
        }));
        const cacheExports = await span("cache.export", () => exportCaches(opts.cacheTo ?? [], input, remoteOpts));
        await span("inputs.save", () => session.explain?.save() ?? Promise.resolve());
        for (const r of cacheExports) emit({ type: "cache-exported", time: Date.now(), ...r });
        const warnings = checked.checks.map((w) => `${shownFile}:${w.range.start.line}: ${w.rule}: ${w.message}`);
        const unused = Object.keys(buildArgs).filter((k) => !consumed.has(k) && !(k in predefined) && !args.has(k));
        if (unused.length > 0) warnings.push(`one or more build args were not consumed: ${unused.sort().join(", ")}`);
        return { ...published, ...image, warnings: [...warnings, ...session.warnings], checks: checked.checks, cacheExports };
      } catch (e) {
        const lie = causeOf(e, CacheMismatchError);
        if (!lie || attempt >= 20) throw e;
        const keys = await session.distrust(lie.diffId);
        if (keys.length === 0) throw e;
        session.warn(`${lie.message}: running the ${keys.length === 1 ? "step" : `${keys.length} steps`} that took it again`);
      }
    }
  } finally {
    gha?.close();
  }
}
function exportInput(session, finalKey) {
  return {
    records: [...session.journal.values()],
    finalKey,
    mounts: [...session.mountsUsed].map(([name, id]) => ({ name, id, dir: join26(session.root, "cache-mounts", name) })),
    sourceDateEpoch: session.opts.sourceDateEpoch
  };
}
function causeOf(e, type) {
  for (let c = e, depth = 0; c instanceof Error && depth < 10; c = c.cause, depth++) if (c instanceof type) return c;
  return void 0;
}
async function writeImage(store, state, platform, labels, annotations) {
  const config = structuredClone(state.config);
  const cc = config.config ??= {};
  if (labels && Object.keys(labels).length > 0) cc.Labels = { ...cc.Labels ?? {}, ...labels };
  if (cc.OnBuild === null) delete cc.OnBuild;
  const lastCreated = config.history?.at(-1)?.created;
  if (lastCreated) config.created = lastCreated;
  config.architecture = platform.architecture;
  config.os = platform.os;
  const configDesc = await store.putJson(MediaType.OciConfig, config);
  const manifest = await store.putJson(MediaType.OciManifest, buildManifest(configDesc, state.layers, annotations.manifest));
  if (Object.keys(annotations.descriptor).length > 0) manifest.annotations = { ...annotations.descriptor };
  return { manifest, configDigest: configDesc.digest };
}

// packages/builder/src/events.ts
init_define_TSBUILD_NATIVE_VERSIONS();
function usageText(u) {
  if (!u) return "";
  const cpu = `cpu ${u.cpu_seconds.toFixed(1)}s`;
  return u.memory_peak_bytes === void 0 ? cpu : `${cpu}  peak ${(u.memory_peak_bytes / 1024 / 1024).toFixed(0)} MiB`;
}

// packages/builder/src/images.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/builder/src/layers.ts
init_define_TSBUILD_NATIVE_VERSIONS();

// packages/action/src/inputs.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { resolve as resolvePath11 } from "node:path";

// packages/action/src/workflow.ts
init_define_TSBUILD_NATIVE_VERSIONS();
import { randomUUID as randomUUID2 } from "node:crypto";
import { appendFileSync } from "node:fs";
function inputName(name) {
  return `INPUT_${name.replace(/ /g, "_").toUpperCase()}`;
}
function getInput(env, name) {
  return (env[inputName(name)] ?? "").trim();
}
function getList(env, name, opts = {}) {
  const raw = getInput(env, name);
  const lines = raw.split(/\r?\n/);
  const items = opts.commas === false ? lines : lines.flatMap((l) => l.split(","));
  return items.map((s) => s.trim()).filter((s) => s !== "" && !s.startsWith("#"));
}
function getBool(env, name, fallback = false) {
  const v = getInput(env, name);
  if (v === "") return fallback;
  if (["true", "True", "TRUE"].includes(v)) return true;
  if (["false", "False", "FALSE"].includes(v)) return false;
  throw new UsageError(`input ${name}: expected true or false, got ${JSON.stringify(v)}`);
}
function keyValueList(items, what) {
  const out = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new UsageError(`input ${what}: ${JSON.stringify(item)} is not KEY=VALUE`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}
function escapeData(s) {
  return s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}
function escapeProperty(s) {
  return escapeData(s).replace(/:/g, "%3A").replace(/,/g, "%2C");
}
function command(name, props, data) {
  const p = Object.entries(props).filter((e) => e[1] !== void 0).map(([k, v]) => `${k}=${escapeProperty(String(v))}`).join(",");
  return `::${name}${p ? ` ${p}` : ""}::${escapeData(data)}
`;
}
function formatOutputs(values) {
  let out = "";
  for (const [k, v] of Object.entries(values)) {
    let delim = `ghadelimiter_${randomUUID2()}`;
    while (v.includes(delim)) delim = `ghadelimiter_${randomUUID2()}`;
    out += `${k}<<${delim}
${v}
${delim}
`;
  }
  return out;
}
function writeOutputs(env, values) {
  const file = env.GITHUB_OUTPUT;
  if (file) appendFileSync(file, formatOutputs(values));
  else for (const [k, v] of Object.entries(values)) process.stdout.write(command("set-output", { name: k }, v));
}
function cell(s) {
  return s.replace(/\|/g, "\\|").replace(/\r?\n/g, " ");
}
function humanBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
function summaryMarkdown(title, facts, steps) {
  const lines = [`### ${cell(title)}`, ""];
  for (const [k, v] of facts) lines.push(`- **${cell(k)}**: \`${cell(v)}\``);
  lines.push("", "| Step | Time | Cache | Layer size | CPU | Peak memory | Why it ran |", "| --- | ---: | :---: | ---: | ---: | ---: | --- |");
  for (const s of steps) {
    const time = s.durationMs === void 0 ? "" : `${(s.durationMs / 1e3).toFixed(2)}s`;
    const cache = s.failed ? "failed" : s.cached ? "hit" : "miss";
    const size = s.layerSize === void 0 ? "" : humanBytes(s.layerSize);
    const cpu = s.usage ? `${s.usage.cpu_seconds.toFixed(2)}s` : "";
    const peak = s.usage?.memory_peak_bytes !== void 0 ? humanBytes(s.usage.memory_peak_bytes) : "";
    lines.push(`| \`${cell(s.name).replace(/`/g, "'")}\` | ${time} | ${cache} | ${size} | ${cpu} | ${peak} | ${cell(s.missReason ?? "")} |`);
  }
  return `${lines.join("\n")}
`;
}

// packages/action/src/inputs.ts
var NETWORKS = ["default", "none", "host"];
function applyBuildxInputs(env, opts) {
  const network = getInput(env, "network");
  if (network !== "") {
    if (!NETWORKS.includes(network)) throw new UsageError(`network: expected one of ${NETWORKS.join(", ")}, got ${JSON.stringify(network)}`);
    opts.network = network;
  }
  const fromEnv = {};
  for (const [id, name] of Object.entries(keyValueList(getList(env, "secret-envs"), "secret-envs"))) fromEnv[id] = { env: name };
  const fromFiles = {};
  for (const [id, file] of Object.entries(keyValueList(getList(env, "secret-files", { commas: false }), "secret-files"))) fromFiles[id] = { file: resolvePath11(file) };
  opts.secrets = { ...fromEnv, ...opts.secrets ?? {}, ...fromFiles };
  const annotations = getList(env, "annotations", { commas: false });
  if (annotations.length > 0) opts.annotations = annotations.flatMap(parseAnnotation);
  const hosts = getList(env, "add-hosts");
  if (hosts.length > 0) opts.extraHosts = hosts.map(parseAddHost);
  const ulimits = getList(env, "ulimit", { commas: false });
  if (ulimits.length > 0) opts.ulimits = parseUlimits(ulimits);
  const shm = getInput(env, "shm-size");
  if (shm !== "") opts.shmSize = parseSize2("shm-size", shm);
  const contexts = getList(env, "build-contexts", { commas: false });
  if (contexts.length > 0) opts.buildContexts = contexts.map((c) => parseBuildContext(c));
  const ssh = getList(env, "ssh", { commas: false });
  if (ssh.length > 0) opts.ssh = Object.fromEntries(ssh.map((s) => parseSsh(s, { ...process.env, ...env })).map((s) => [s.id, s.paths]));
  summaryEnabled(env, true);
}
function summaryEnabled(env, strict = false) {
  const v = env.DOCKER_BUILD_SUMMARY;
  if (v === void 0 || v === "") return true;
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  if (strict) throw new UsageError(`DOCKER_BUILD_SUMMARY: expected true or false, got ${JSON.stringify(v)}`);
  return true;
}

// packages/action/src/action.ts
var GroupedLog = class {
  constructor(write) {
    this.write = write;
  }
  write;
  open;
  stageOf = /* @__PURE__ */ new Map();
  partial = /* @__PURE__ */ new Map();
  steps = /* @__PURE__ */ new Map();
  enter(stage, title) {
    if (this.open === stage) return;
    if (this.open !== void 0) this.write("::endgroup::\n");
    this.open = stage;
    this.write(command("group", {}, `[${stage}] ${title}`));
  }
  flush(id) {
    const rest = this.partial.get(id);
    if (rest) this.write(`#${id} ${rest}
`);
    this.partial.delete(id);
  }
  event(e) {
    switch (e.type) {
      case "step-start": {
        this.stageOf.set(e.id, e.stage);
        const title = e.name.replace(/^\[[^\]]*\]\s*/, "");
        this.steps.set(e.id, { name: e.name, durationMs: void 0, cached: false, layerSize: void 0, failed: false });
        this.enter(e.stage, title);
        this.write(`#${e.id} ${e.name}
`);
        break;
      }
      case "step-log": {
        this.enter(this.stageOf.get(e.id) ?? "?", "(output)");
        const text = (this.partial.get(e.id) ?? "") + e.data;
        const lines = text.split(/\r?\n/);
        this.partial.set(e.id, lines.pop() ?? "");
        for (const l of lines) this.write(`#${e.id} ${l}
`);
        break;
      }
      case "step-done": {
        this.enter(this.stageOf.get(e.id) ?? "?", "(done)");
        this.flush(e.id);
        const row = this.steps.get(e.id);
        if (row) {
          Object.assign(row, { durationMs: e.durationMs, cached: e.cached, layerSize: e.layerSize });
          if (e.usage) row.usage = e.usage;
          if (e.miss) row.missReason = e.miss.reason;
        }
        this.write(`#${e.id} ${e.cached ? "CACHED" : `DONE ${(e.durationMs / 1e3).toFixed(1)}s${e.usage ? `  ${usageText(e.usage)}` : ""}${e.miss ? `  (cache miss: ${e.miss.reason})` : ""}`}
`);
        break;
      }
      case "step-error": {
        this.enter(this.stageOf.get(e.id) ?? "?", "(error)");
        this.flush(e.id);
        const row = this.steps.get(e.id);
        if (row) row.failed = true;
        this.write(`#${e.id} ERROR: ${e.message.split("\n").join(`
#${e.id} `)}
`);
        break;
      }
      case "exported":
        this.enter("outputs", `export type=${e.output}`);
        this.write(`wrote ${e.dest}${e.size ? ` (${e.size} bytes)` : ""}
`);
        break;
      case "push-blob":
        this.enter("outputs", `push ${e.ref}`);
        this.write(`${e.digest.slice(7, 19)}: ${e.status}
`);
        break;
      case "pushed":
        this.enter("outputs", `push ${e.ref}`);
        this.write(`pushed ${e.ref}@${e.digest}
`);
        break;
      default:
        break;
    }
  }
  close() {
    for (const id of [...this.partial.keys()]) this.flush(id);
    if (this.open !== void 0) this.write("::endgroup::\n");
    this.open = void 0;
  }
};
function annotationFile(file, env) {
  const ws = env.GITHUB_WORKSPACE;
  if (!ws || !isAbsolute3(file)) return file;
  const rel = relative(resolvePath12(ws), file);
  return rel.startsWith("..") || isAbsolute3(rel) ? file : rel;
}
function errorCommand(e, env) {
  if (e instanceof DockerfileError) {
    const r = e.range;
    const props = r ? { file: annotationFile(e.file, env), line: r.start.line, col: r.start.column, endLine: r.end.line, endColumn: r.end.column, title: "Dockerfile" } : { file: annotationFile(e.file, env), title: "Dockerfile" };
    return command("error", props, e.hint ? `${e.detail}
${e.hint}` : e.detail);
  }
  if (e instanceof TsbuildError) return command("error", { title: "tsbuild" }, e.hint ? `${e.message}
${e.hint}` : e.message);
  return command("error", { title: "tsbuild (internal error)" }, e instanceof Error ? e.stack ?? e.message : String(e));
}
var secretSeq = 0;
function readInputs(env) {
  const platforms = getList(env, "platforms");
  if (platforms.length > 1) {
    throw new UsageError(`platforms: tsbuild builds one platform per run, got ${platforms.join(", ")}`, { hint: "use a matrix job per platform" });
  }
  const compression = getInput(env, "compression") || "gzip";
  if (compression !== "gzip" && compression !== "zstd") throw new UsageError(`compression: expected gzip or zstd, got ${JSON.stringify(compression)}`);
  const secrets = {};
  for (const [id, value] of Object.entries(keyValueList(getList(env, "secrets", { commas: false }), "secrets"))) {
    const name = `TSBUILD_ACTION_SECRET_${secretSeq++}`;
    process.env[name] = value;
    secrets[id] = { env: name };
  }
  const file = getInput(env, "file");
  const opts = {
    context: getInput(env, "context") || ".",
    file: file ? resolvePath12(file) : void 0,
    tags: getList(env, "tags"),
    outputs: getList(env, "outputs", { commas: false }).map(parseOutput),
    push: getBool(env, "push"),
    compression,
    registry: registryInputs(env),
    buildArgs: keyValueList(getList(env, "build-args", { commas: false }), "build-args"),
    labels: keyValueList(getList(env, "labels", { commas: false }), "labels"),
    noCache: getBool(env, "no-cache"),
    ...attestInputs(env),
    cacheFrom: getList(env, "cache-from", { commas: false }).map((c) => parseCacheFrom(c, env)),
    cacheTo: getList(env, "cache-to", { commas: false }).map((c) => parseCacheTo(c, env)),
    pull: getBool(env, "pull"),
    secrets,
    target: getInput(env, "target") || void 0,
    platform: platforms[0],
    runtime: getInput(env, "runtime") || void 0,
    root: env.TSBUILD_ROOT || void 0
  };
  applyBuildxInputs(env, opts);
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch !== void 0 && epoch !== "") {
    if (!/^\d+$/.test(epoch)) throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds, got ${JSON.stringify(epoch)}`);
    opts.sourceDateEpoch = Number(epoch);
  }
  return opts;
}
function registryInputs(env) {
  const o = { insecure: getList(env, "insecure-registry") };
  const ca = getInput(env, "ca-file");
  if (ca) o.caFile = resolvePath12(ca);
  const t = getInput(env, "registry-timeout");
  if (t) {
    const seconds = Number(t);
    if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`registry-timeout: expected a positive number of seconds, got ${JSON.stringify(t)}`);
    o.timeoutMs = Math.round(seconds * 1e3);
  }
  return o;
}
async function runAction(o) {
  const { env, write } = o;
  const log = new GroupedLog(write);
  const started = Date.now();
  let title = "tsbuild";
  const facts = [];
  try {
    const inputs = readInputs(env);
    for (const spec of Object.values(inputs.secrets ?? {})) {
      const value = spec.env !== void 0 ? process.env[spec.env] : void 0;
      for (const line of (value ?? "").split(/\r?\n/)) if (line.trim() !== "") write(command("add-mask", {}, line));
    }
    title = `tsbuild: ${inputs.tags?.[0] ?? "untagged image"}`;
    const r = await build({ ...inputs, onEvent: (e) => log.event(e), signal: o.signal });
    log.close();
    for (const c of r.checks) {
      const at = { file: annotationFile(c.file, env), line: c.range.start.line, col: c.range.start.column, endLine: c.range.end.line, endColumn: c.range.end.column };
      write(command("warning", { ...at, title: c.rule }, `${c.message}
${c.url}`));
    }
    for (const w of r.warnings.slice(r.checks.length)) write(command("warning", { title: "tsbuild" }, w));
    writeOutputs(env, { imageid: r.configDigest, digest: r.digest, metadata: JSON.stringify(r.metadata, null, 2) });
    facts.push(["image id", r.configDigest], ["digest", r.digest], ["total", `${((Date.now() - started) / 1e3).toFixed(1)}s`]);
    if (r.tags.length > 0) facts.push(["tags", r.tags.join(", ")]);
    if (r.pushed.length > 0) facts.push(["pushed", "yes"]);
    writeSummary(env, title, facts, log);
    return 0;
  } catch (e) {
    log.close();
    write(errorCommand(e, env));
    facts.push(["result", "failed"], ["error", e instanceof DockerfileError ? e.message : e instanceof Error ? e.message : String(e)]);
    writeSummary(env, title, facts, log);
    return 1;
  }
}
function writeSummary(env, title, facts, log) {
  if (!env.GITHUB_STEP_SUMMARY || !summaryEnabled(env)) return;
  try {
    appendFileSync2(env.GITHUB_STEP_SUMMARY, summaryMarkdown(title, facts, [...log.steps.values()]));
  } catch {
  }
}
function attestInputs(env) {
  const out = {};
  const p = getInput(env, "provenance");
  if (p !== "") {
    const v = p.replace(/^type=provenance,?/, "");
    if (v === "true" || v === "mode=min" || v === "min") out.provenance = "min";
    else if (v === "mode=max" || v === "max") out.provenance = "max";
    else if (v === "false") out.provenance = false;
    else throw new UsageError(`provenance: expected true, false or mode=min|max, got ${JSON.stringify(p)}`);
  }
  if (getInput(env, "sbom") !== "") out.sbom = getBool(env, "sbom");
  return out;
}

// packages/action/src/main.ts
function viaSudo() {
  const env = { ...process.env, TSBUILD_ACTION_ELEVATED: "1" };
  env.DOCKER_CONFIG ??= join27(process.env.HOME || homedir3(), ".docker");
  const r = spawnSync("sudo", ["-n", "--preserve-env", process.execPath, ...process.argv.slice(1)], { stdio: "inherit", env });
  if (r.error || r.status === null) {
    process.stdout.write(command("error", { title: "tsbuild" }, `tsbuild needs root (overlay mounts, runc) and "sudo -n" failed: ${r.error?.message ?? `killed by ${r.signal}`}`));
    return 1;
  }
  return r.status;
}
async function main() {
  if (process.getuid?.() !== 0) {
    if (process.env.TSBUILD_ACTION_ELEVATED === "1") {
      process.stdout.write(command("error", { title: "tsbuild" }, "still not root after sudo"));
      return 1;
    }
    return viaSudo();
  }
  const ac = new AbortController();
  const stop = () => ac.abort(new Error("cancelled"));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return runAction({ env: process.env, write: (s) => process.stdout.write(s), signal: ac.signal });
}
process.exitCode = await main();
