//! Enums stored in TEXT columns (an order's status, a ledger row's kind, a request's outcome).
//! [`text_enum!`] gives each variant one spelling, used alike by Postgres (through sqlx), serde,
//! `Display` and `FromStr`, so a state is compared as a variant, never as a string, and a row
//! holding a spelling the code does not know fails to decode instead of being misread.

/// A spelling read from the database or a request that names no variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} \"{code}\"")]
pub struct UnknownCode {
    pub what: &'static str,
    pub code: String,
}

/// `text_enum! { /// doc
///     pub enum OrderStatus { Created = "created", Paid = "paid" } }`
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text_enum::UnknownCode;
            fn from_str(s: &str) -> Result<$name, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::text_enum::UnknownCode { what: stringify!($name), code: s.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(v: sqlx::postgres::PgValueRef<'r>) -> Result<$name, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(v)?.parse()?)
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    text_enum! {
        /// For the tests.
        pub enum Colour { Red = "red", DarkBlue = "dark_blue", }
    }

    #[test]
    fn one_spelling_everywhere() {
        assert_eq!(Colour::DarkBlue.to_string(), "dark_blue");
        assert_eq!("red".parse::<Colour>(), Ok(Colour::Red));
        assert_eq!("Red".parse::<Colour>().unwrap_err().to_string(), "unknown Colour \"Red\"");
        assert_eq!(serde_json::to_string(&Colour::DarkBlue).unwrap(), "\"dark_blue\"");
        assert_eq!(serde_json::from_str::<Colour>("\"red\"").unwrap(), Colour::Red);
        assert!(serde_json::from_str::<Colour>("\"green\"").is_err());
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
    }

    #[sqlx::test(migrations = false)]
    async fn travels_as_text(pool: sqlx::PgPool) {
        let back: (Colour, String) = sqlx::query_as("SELECT $1::text, $1::text")
            .bind(Colour::DarkBlue)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(back, (Colour::DarkBlue, "dark_blue".into()));
        let many: Vec<Colour> = sqlx::query_scalar("SELECT unnest($1::text[])")
            .bind(vec![Colour::Red, Colour::DarkBlue])
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(many, vec![Colour::Red, Colour::DarkBlue]);
        let bad = sqlx::query_scalar::<_, Colour>("SELECT 'green'::text").fetch_one(&pool).await;
        assert!(bad.is_err());
    }
}
